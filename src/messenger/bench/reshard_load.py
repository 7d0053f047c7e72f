"""The mixed load a resharding run runs under, and the ledger of every write it acknowledged.

Each virtual user owns its own ids (the sampled ones dealt round-robin, plus those it creates),
so the writes to one id are sequential and the value a later read must see is simply the last
one acknowledged: a read that returns anything else is a stale read. The same for messages: each
virtual user sends as its own accounts (bench/reshard_chat.py) and the history page it reads
next must hold its last acknowledged message when that message falls within the page. A write that got no answer (timeout, broken connection, 5xx other than a
refusal) may or may not have landed: its value is allowed too, until a later write is
acknowledged. A refusal (4xx, 503 `range_moved`) wrote nothing. After the load, `verify` reads
every id the ledger acknowledged through the API and counts those whose value is not allowed:
the lost writes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from messenger.bench.loadgen import Connection, RequestFailed, Response
from messenger.bench.phase import Target
from messenger.bench.reshard_analysis import UNKNOWN, MovingKeys, Sample
from messenger.bench.reshard_chat import Chatter, MessageLedger
from messenger.bench.scenarios import CONVERSATIONS, USERS

CREATED_FIRST_NAME = "Reshard"
VERIFY_CONNECTIONS = 16
VERIFY_PASSES = 3
"""Reads of a mismatching id before it counts as lost (a replica catching up gets a second look)."""
HISTORY_LIMIT = 20
STALE_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of the operations: 80 % reads (a user, a history page), 20 % writes (rename a
    user, create one, send a message)."""

    get: float = 0.6
    history: float = 0.2
    patch: float = 0.09
    create: float = 0.03
    send: float = 0.08

    def pick(self, rng: random.Random) -> str:
        shares = (("get", self.get), ("history", self.history), ("patch", self.patch),
                  ("create", self.create), ("send", self.send))
        x = rng.random() * sum(share for _, share in shares)
        for op, share in shares:
            if x < share:
                return op
            x -= share
        return "get"


@dataclass(slots=True)
class LedgerEntry:
    acknowledged: str | None = None
    """The last acknowledged last_name."""
    uncertain: list[str] = field(default_factory=list)
    """Values sent after it that got no answer: any of them may be what the row holds."""
    created: bool = False
    writes: int = 0

    def allowed(self) -> set[str]:
        return {self.acknowledged, *self.uncertain} if self.acknowledged is not None else set(self.uncertain)


@dataclass(slots=True)
class Ledger:
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    acknowledged: int = 0
    uncertain: int = 0
    rejected: int = 0
    unknown_creates: int = 0
    """Creates that got no answer: their id is unknown, so nothing can be checked."""

    def entry(self, user_id: str) -> LedgerEntry:
        found = self.entries.get(user_id)
        if found is None:
            found = self.entries[user_id] = LedgerEntry()
        return found

    def acknowledge(self, user_id: str, value: str, *, created: bool = False) -> None:
        entry = self.entry(user_id)
        entry.acknowledged, entry.uncertain = value, []
        entry.created = entry.created or created
        entry.writes += 1
        self.acknowledged += 1

    def unanswered(self, user_id: str, value: str) -> None:
        self.entry(user_id).uncertain.append(value)
        self.uncertain += 1


def outcome_of(response: Response) -> str:
    """"200", or the status and the JSON error code ("503 range_moved")."""
    if 200 <= response.status < 300:
        return str(response.status)
    try:
        code = msgspec.json.decode(response.body)["error"]["code"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return str(response.status)
    return f"{response.status} {code}"


def is_refusal(outcome: str) -> bool:
    """The server said no, so nothing was written (4xx, or the fence's bounded 503)."""
    return outcome.startswith("4") or outcome == "503 range_moved"


Tick = Callable[["ReshardLoad"], None]


class ReshardLoad:
    """`connections` virtual users, together offering about `rate` requests per second."""

    def __init__(
        self,
        target: Target,
        ids: list[str],
        keys: MovingKeys,
        *,
        connections: int,
        rate: float,
        mix: Mix,
        timeout: float,
        chatters: list[Chatter] | None = None,
        messages: MessageLedger | None = None,
        seed: int = 12,
    ) -> None:
        self.target = target
        self.keys = keys
        self.connections = connections
        self.interval = connections / rate
        self.mix = mix
        self.timeout = timeout
        self.owned = [ids[i::connections] for i in range(connections)]
        chatters = chatters or []
        # Dealt round-robin; with fewer accounts than connections, some are shared.
        self.chatters = [
            chatters[i::connections] or ([chatters[i % len(chatters)]] if chatters else [])
            for i in range(connections)
        ]
        self.messages = messages if messages is not None else MessageLedger()
        self.stale_reads = 0
        self.stale_samples: list[str] = []
        self.rng = random.Random(seed)
        self.samples: list[Sample] = []
        self.ledger = Ledger()
        self.started = time.perf_counter()
        self._class: dict[str, str] = {}

    def key_class(self, user_id: str) -> str:
        found = self._class.get(user_id)
        if found is None:
            found = self._class[user_id] = self.keys.key_class(user_id)
        return found

    async def run(self, stop: asyncio.Event) -> None:
        self.started = time.perf_counter()
        await asyncio.gather(*(self._user(i, stop) for i in range(self.connections)))

    async def _user(self, n: int, stop: asyncio.Event) -> None:
        conn = Connection(self.target.host, self.target.port, self.timeout)
        rng = random.Random(self.rng.random())
        owned, chats, seq = self.owned[n], self.chatters[n], 0
        last_sent: dict[str, str] = {}
        """Conversation id -> this user's last acknowledged message id there."""
        due = time.perf_counter() + rng.random() * self.interval
        try:
            while not stop.is_set():
                pause = due - time.perf_counter()
                if pause > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), pause)
                        return
                    except TimeoutError:
                        pass
                due = max(due + self.interval, time.perf_counter() - self.interval)
                op = self.mix.pick(rng) if owned else "create"
                if not chats and op in ("send", "history"):
                    op = "patch" if op == "send" else "get"
                seq += 1
                value = f"w{n}-{seq}"
                if op == "create":
                    await self._create(conn, owned, value)
                elif op == "send":
                    await self._send(conn, rng.choice(chats), rng, value, last_sent)
                elif op == "history":
                    await self._history(conn, rng.choice(chats), rng, last_sent)
                else:
                    await self._on_id(conn, op, rng.choice(owned), value)
        finally:
            conn.close()

    async def _on_id(self, conn: Connection, op: str, user_id: str, value: str) -> None:
        path = f"{USERS}/{user_id}"
        body = msgspec.json.encode({"last_name": value}) if op == "patch" else None
        start = time.perf_counter()
        try:
            response = await conn.request("PATCH" if op == "patch" else "GET", path, body)
            outcome = outcome_of(response)
            if op == "get" and outcome == "200":
                self._check_user(user_id, msgspec.json.decode(response.body)["last_name"])
        except RequestFailed as exc:
            outcome = exc.kind
        end = time.perf_counter()
        self.samples.append(Sample(start - self.started, end - start, op, self.key_class(user_id), outcome))
        if op == "patch":
            if outcome == "200":
                self.ledger.acknowledge(user_id, value)
            elif is_refusal(outcome):
                self.ledger.rejected += 1
            else:
                self.ledger.unanswered(user_id, value)

    def _check_user(self, user_id: str, last_name: str) -> None:
        entry = self.ledger.entries.get(user_id)
        if entry is not None and entry.acknowledged is not None and last_name not in entry.allowed():
            self._stale(f"user {user_id}: read {last_name!r}, acknowledged {sorted(entry.allowed())}")

    def _stale(self, what: str) -> None:
        self.stale_reads += 1
        if len(self.stale_samples) < STALE_SAMPLES:
            self.stale_samples.append(what)

    async def _send(
        self, conn: Connection, chatter: Chatter, rng: random.Random, value: str, last_sent: dict[str, str]
    ) -> None:
        cid = rng.choice(chatter.conversations)
        body = msgspec.json.encode({"body": f"reshard {value}", "client_message_id": value})
        start = time.perf_counter()
        message_id = None
        try:
            response = await conn.request("POST", f"{CONVERSATIONS}/{cid}/messages", body, chatter.headers)
            outcome = outcome_of(response)
            if outcome in ("200", "201"):
                message_id = str(msgspec.json.decode(response.body)["id"])
        except RequestFailed as exc:
            outcome = exc.kind
        end = time.perf_counter()
        self.samples.append(Sample(start - self.started, end - start, "send", self.key_class(cid), outcome))
        if message_id is not None:
            self.messages.acknowledge(cid, value)
            self.messages.sent += 1
            last_sent[cid] = message_id
        elif is_refusal(outcome):
            self.messages.rejected += 1
        else:
            self.messages.unanswered()

    async def _history(
        self, conn: Connection, chatter: Chatter, rng: random.Random, last_sent: dict[str, str]
    ) -> None:
        """The newest page; it must hold this user's last acknowledged message there when that
        message is newer than the page's oldest (ids grow within a conversation)."""
        cid = rng.choice(chatter.conversations)
        start = time.perf_counter()
        try:
            response = await conn.request(
                "GET", f"{CONVERSATIONS}/{cid}/messages?limit={HISTORY_LIMIT}", None, chatter.headers
            )
            outcome = outcome_of(response)
            if outcome == "200" and (mine := last_sent.get(cid)) is not None:
                page = msgspec.json.decode(response.body)
                ids = [item["id"] for item in page["items"]]
                if mine not in ids and (not page["has_more"] or not ids or mine > ids[-1]):
                    self._stale(f"history {cid}: message {mine} missing from the newest page")
        except RequestFailed as exc:
            outcome = exc.kind
        end = time.perf_counter()
        self.samples.append(Sample(start - self.started, end - start, "history", self.key_class(cid), outcome))

    async def _create(self, conn: Connection, owned: list[str], value: str) -> None:
        body = msgspec.json.encode({"first_name": CREATED_FIRST_NAME, "last_name": value})
        start = time.perf_counter()
        user_id = None
        try:
            response = await conn.request("POST", USERS, body)
            outcome = outcome_of(response)
            if outcome == "201":
                user_id = str(msgspec.json.decode(response.body)["id"])
        except RequestFailed as exc:
            outcome = exc.kind
        end = time.perf_counter()
        key_class = self.key_class(user_id) if user_id else UNKNOWN
        self.samples.append(Sample(start - self.started, end - start, "create", key_class, outcome))
        if user_id is not None:
            self.ledger.acknowledge(user_id, value, created=True)
            owned.append(user_id)
        elif is_refusal(outcome):
            self.ledger.rejected += 1
        else:
            self.ledger.unknown_creates += 1


@dataclass(slots=True)
class Verification:
    checked: int = 0
    lost: list[str] = field(default_factory=list)
    """'<id>: expected <values>, read <what>' for each id whose acknowledged write is gone."""
    lost_moving: int = 0


async def verify(target: Target, ledger: Ledger, keys: Callable[[str], str], timeout: float) -> Verification:
    """Read every acknowledged id through the API; an id is lost when no pass reads an allowed value."""
    pending = [(uid, e) for uid, e in ledger.entries.items() if e.acknowledged is not None]
    result = Verification(checked=len(pending))
    last_read: dict[str, str] = {}
    for attempt in range(VERIFY_PASSES):
        if attempt:
            await asyncio.sleep(1.0)
        queue = list(pending)
        failed: list[tuple[str, LedgerEntry]] = []

        async def reader(queue: list[tuple[str, LedgerEntry]] = queue, failed: list[tuple[str, LedgerEntry]] = failed
                         ) -> None:
            conn = Connection(target.host, target.port, timeout)
            try:
                while queue:
                    uid, entry = queue.pop()
                    try:
                        response = await conn.request("GET", f"{USERS}/{uid}")
                    except RequestFailed as exc:
                        last_read[uid] = exc.kind
                        failed.append((uid, entry))
                        continue
                    if response.status != 200:
                        last_read[uid] = outcome_of(response)
                        failed.append((uid, entry))
                        continue
                    user = msgspec.json.decode(response.body)
                    ok = user["last_name"] in entry.allowed()
                    ok = ok and (not entry.created or user["first_name"] == CREATED_FIRST_NAME)
                    if not ok:
                        last_read[uid] = f"{user['first_name']} {user['last_name']}"
                        failed.append((uid, entry))
            finally:
                conn.close()

        await asyncio.gather(*(reader() for _ in range(VERIFY_CONNECTIONS)))
        pending = failed
        if not pending:
            break
    result.lost = [f"{uid}: expected {sorted(e.allowed())}, read {last_read.get(uid)}" for uid, e in pending]
    result.lost_moving = sum(1 for uid, _ in pending if keys(uid) == "moving")
    return result
