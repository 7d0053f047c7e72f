"""The mixed load the faults run under, writing every acknowledged write into the ledger.

Each virtual user is signed in as one of the setup's accounts and loops, with a short pause:
create a profile user and read it back at once (read-your-writes, no header), patch one of its
own users and read that back, read a random user, send a message into one of its groups, read
a history page. The bench's lean HTTP client (`bench.loadgen.Connection`) carries it. Every
response is checked; a read that does not show what this client just wrote counts as a
failure of kind `stale`. Every request becomes an `Outcome` in the ledger, with the shard the
error named (503s name it) or else the shard of its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from messenger.bench.loadgen import Connection, RequestFailed
from messenger.bench.messaging import Account
from messenger.chaos.ledger import Ledger, Outcome
from messenger.storage.shards.ring import HashRing

USERS = "/api/v1/users"
CONVERSATIONS = "/api/v1/conversations"
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald")
MIX = (("create", 15), ("patch", 15), ("read", 25), ("send", 30), ("history", 15))
"""Operation weights (percent) of one step."""
UNSURE_STATUSES = frozenset({500, 502, 503, 504})
"""A write answered with these may still have committed (CommitUncertain is a 503)."""

_decode = msgspec.json.decode
_encode = msgspec.json.encode


class StepFailed(Exception):
    """A request of the step failed (already recorded); the step stops there."""


@dataclass(frozen=True, slots=True)
class LoadPlan:
    connections: int
    think_s: float
    timeout_s: float
    conversations_of: Mapping[str, Sequence[str]]
    """Account user id -> the conversations it may send into."""


class MixedLoad:
    """The virtual users; `pause()` waits until none is inside a step, `resume()` lets them go."""

    def __init__(
        self, host: str, port: int, accounts: Sequence[Account], plan: LoadPlan,
        ledger: Ledger, ring: HashRing, shard_names: Mapping[int, str], *, seed: int = 0,
    ) -> None:
        if not accounts:
            raise ValueError("the load needs at least one signed-in account")
        self.host, self.port = host, port
        self.accounts = accounts
        self.plan = plan
        self.ledger = ledger
        self.ring = ring
        self.shard_names = shard_names
        self.rng = random.Random(seed)
        self._go = asyncio.Event()
        self._go.set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._own: dict[int, list[str]] = {}
        self._generation = 0
        """Bumped by resume(): each user then opens a fresh connection, since the server
        closes keep-alive connections left idle through a long pause (seen as `protocol`
        errors on every shard at the start of the next phase)."""

    def start(self) -> None:
        self._tasks = [
            asyncio.ensure_future(self._user(n, random.Random(self.rng.getrandbits(64))))
            for n in range(self.plan.connections)
        ]

    async def pause(self) -> None:
        self._go.clear()
        while self._busy:
            self._idle.clear()
            await self._idle.wait()

    def resume(self) -> None:
        self._generation += 1
        self._go.set()

    async def stop(self) -> None:
        self._stop.set()
        self._go.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one virtual user -------------------------------------------------------------------

    async def _user(self, number: int, rng: random.Random) -> None:
        account = self.accounts[number % len(self.accounts)]
        conn = Connection(self.host, self.port, self.plan.timeout_s)
        headers = f"Authorization: Bearer {account.token}\r\n"
        ops = [op for op, _ in MIX]
        weights = [w for _, w in MIX]
        own = self._own.setdefault(number, [])
        generation = self._generation
        try:
            while not self._stop.is_set():
                await self._go.wait()
                if self._stop.is_set():
                    break
                if generation != self._generation:
                    conn.close()
                    generation = self._generation
                self._busy += 1
                try:
                    op = rng.choices(ops, weights)[0]
                    with contextlib.suppress(StepFailed):
                        await self._step(op, conn, headers, account, own, rng)
                finally:
                    self._busy -= 1
                    if not self._busy:
                        self._idle.set()
                await asyncio.sleep(self.plan.think_s * (0.5 + rng.random()))
        finally:
            conn.close()

    async def _step(
        self, op: str, conn: Connection, headers: str, account: Account, own: list[str],
        rng: random.Random,
    ) -> None:
        if op == "patch" and not own:
            op = "create"
        if op == "read" and not self.ledger.users:
            op = "create"
        if op == "create":
            names = (rng.choice(FIRST_NAMES), f"chaos-{uuid.uuid4().hex[:8]}")
            body = await self._call(conn, "create", "POST", USERS, None,
                                    {"first_name": names[0], "last_name": names[1]}, expect=201)
            user_id = str(body["id"])
            self.ledger.user_created(user_id, self._shard_name(user_id), names)
            own.append(user_id)
            await self._read_back(conn, user_id, names)
        elif op == "patch":
            user_id = rng.choice(own)
            names = (rng.choice(FIRST_NAMES), f"chaos-{uuid.uuid4().hex[:8]}")
            try:
                await self._call(conn, "patch", "PATCH", f"{USERS}/{user_id}", user_id,
                                 {"first_name": names[0], "last_name": names[1]})
            except StepFailed:
                self.ledger.user_write_unsure(user_id, names)  # may have committed
                raise
            self.ledger.user_patched(user_id, names)
            await self._read_back(conn, user_id, names)
        elif op == "read":
            user_id = rng.choice(list(self.ledger.users))
            await self._call(conn, "read", "GET", f"{USERS}/{user_id}", user_id)
        elif op == "send":
            cid = rng.choice(self.plan.conversations_of[account.user_id])
            client_id = uuid.uuid4().hex
            text = f"chaos {client_id}"
            message = await self._call(
                conn, "send", "POST", f"{CONVERSATIONS}/{cid}/messages", cid,
                {"body": text, "client_message_id": client_id}, headers=headers, expect=201,
            )
            if message.get("body") != text or not isinstance(message.get("seq"), int):
                self._fail("send", cid, "validation")
            self.ledger.message_sent(str(message["id"]), cid, int(message["seq"]), text,
                                     self._shard_name(cid))
        else:
            cid = rng.choice(self.plan.conversations_of[account.user_id])
            await self._call(conn, "history", "GET", f"{CONVERSATIONS}/{cid}/messages?limit=20",
                             cid, headers=headers)

    async def _read_back(self, conn: Connection, user_id: str, names: tuple[str, str]) -> None:
        body = await self._call(conn, "read-own", "GET", f"{USERS}/{user_id}", user_id)
        if (body.get("first_name"), body.get("last_name")) != names:
            self._fail("read-own", user_id, "stale")

    # -- one request ------------------------------------------------------------------------

    async def _call(
        self, conn: Connection, op: str, method: str, path: str, key: str | None,
        body: Any = None, *, headers: str = "", expect: int = 200,
    ) -> Any:
        payload = None if body is None else _encode(body)
        try:
            response = await conn.request(method, path, payload, headers)
        except RequestFailed as failure:
            self._fail(op, key, failure.kind)
        if response.status != expect:
            self._fail(op, key, _status_error(response.status, response.body),
                       _named_shard(response.body))
        try:
            decoded = _decode(response.body)
        except msgspec.DecodeError:
            self._fail(op, key, "validation")
        self.ledger.record(Outcome(time.monotonic(), op, True, self._shard_of(key), key))
        return decoded

    def _fail(self, op: str, key: str | None, error: str, shard: str | None = None) -> Any:
        shard = shard or (self._shard_of(key) if key else None)
        self.ledger.record(Outcome(time.monotonic(), op, False, shard, key, error))
        raise StepFailed(error)

    def _shard_of(self, key: str | None) -> str | None:
        return None if key is None else self._shard_name(key)

    def _shard_name(self, key: str) -> str:
        return self.shard_names[self.ring.shard_for(key)]


def _status_error(status: int, body: bytes) -> str:
    code = ""
    with contextlib.suppress(msgspec.DecodeError, TypeError, KeyError, AttributeError):
        code = str(_decode(body)["error"]["code"])
    return f"{status} {code}".strip()


def _named_shard(body: bytes) -> str | None:
    """The shard a 503's error details name (`shard_unavailable`, `shard_busy`)."""
    try:
        shard = _decode(body)["error"]["details"].get("shard")
    except (msgspec.DecodeError, TypeError, KeyError, AttributeError):
        return None
    return shard if isinstance(shard, str) else None
