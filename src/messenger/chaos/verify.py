"""After a fault's recovery: nothing acknowledged lost, the relay drained, references clean.

- Every ledger entry is re-read through the API (users by id; each conversation's event log,
  where every acknowledged message must appear as `message.created` with its id and seq). A
  mismatch is re-read until a deadline, since a replica catching up may serve an older row for
  a moment; what is still wrong then is lost.
- The outbox backlog is read from every shard's primary, as `messenger check references` and
  /metrics compute it (`OutboxRelay.backlog`), until nothing is pending or the deadline passes;
  the API's own workers relay it.
- The reference audit is `messenger check references` without --repair.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import psycopg

from messenger.bench.loadgen import Connection, RequestFailed
from messenger.bench.messaging import Account
from messenger.chaos.ledger import Ledger
from messenger.domain.errors import MessengerError
from messenger.storage.audit.checks import reference_checks
from messenger.storage.audit.runner import audit
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import Backlog, OutboxRelay
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import Topology

EVENTS_PAGE = 500
REREAD_CONCURRENCY = 8
_decode = msgspec.json.decode


@dataclass(slots=True)
class Reread:
    checked: int = 0
    lost: int = 0
    samples: list[str] = field(default_factory=list)

    def lose(self, what: str) -> None:
        self.lost += 1
        if len(self.samples) < 5:
            self.samples.append(what)


@dataclass(frozen=True, slots=True)
class BacklogState:
    pending: int
    dead: int
    drained_s: float | None
    """Seconds until nothing was pending; None when the deadline passed first."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class ReferencesState:
    ok: bool
    detail: str


async def reread_ledger(
    host: str, port: int, ledger: Ledger, reader_of: Mapping[str, Account], timeout_s: float,
) -> Reread:
    """`reader_of`: conversation id -> a member whose token may read its log."""
    result = Reread()
    deadline = time.monotonic() + timeout_s
    users = list(ledger.users.values())
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(users)):
        queue.put_nowait(i)
    wrong: dict[str, str] = {}

    async def user_worker() -> None:
        conn = Connection(host, port, 10.0)
        try:
            while not queue.empty():
                entry = users[queue.get_nowait()]
                while True:
                    problem = await _user_problem(conn, entry.user_id, entry.possible)
                    if problem is None or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                if problem is not None:
                    wrong[entry.user_id] = problem
        finally:
            conn.close()

    await asyncio.gather(*(user_worker() for _ in range(REREAD_CONCURRENCY)))
    result.checked += len(users)
    for user_id, problem in sorted(wrong.items()):
        result.lose(f"user {user_id}: {problem}")

    conn = Connection(host, port, 10.0)
    try:
        for cid, entries in ledger.messages_by_conversation().items():
            result.checked += len(entries)
            while True:
                seen = await _logged_messages(conn, cid, reader_of[cid])
                absent = [e for e in entries if seen.get(e.message_id) != e.seq]
                if not absent or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            for entry in absent:
                got = seen.get(entry.message_id)
                result.lose(f"message {entry.message_id} (seq {entry.seq}) in {cid}: "
                            + ("absent" if got is None else f"logged at seq {got}"))
    finally:
        conn.close()
    return result


async def _user_problem(conn: Connection, user_id: str, possible: set[tuple[str, str]]) -> str | None:
    try:
        response = await conn.request("GET", f"/api/v1/users/{user_id}")
    except RequestFailed as exc:
        return f"GET failed: {exc}"
    if response.status != 200:
        return f"GET -> {response.status}"
    body = _decode(response.body)
    names = (body.get("first_name"), body.get("last_name"))
    return None if names in possible else f"reads {names}, acknowledged {sorted(possible)}"


async def _logged_messages(conn: Connection, cid: str, reader: Account) -> dict[str, int]:
    """message id -> seq of every `message.created` in the conversation's log."""
    headers = f"Authorization: Bearer {reader.token}\r\n"
    seen: dict[str, int] = {}
    after = 0
    while True:
        path = f"/api/v1/conversations/{cid}/events?after={after}&limit={EVENTS_PAGE}"
        try:
            response = await conn.request("GET", path, None, headers)
        except RequestFailed:
            return seen
        if response.status != 200:
            return seen
        items = _decode(response.body)["items"]
        for frame in items:
            if frame.get("type") == "message.created":
                seen[frame["message"]["id"]] = int(frame["message"]["seq"])
            after = max(after, int(frame.get("seq") or 0))
        if len(items) < EVENTS_PAGE:
            return seen


async def wait_backlog(topology: Topology, timeout_s: float) -> BacklogState:
    started = time.monotonic()
    last: list[Backlog] = []
    error = ""
    async with PrimaryPools(topology) as pools:
        relay = OutboxRelay(pools, HANDLERS)
        while True:
            try:
                last = await relay.backlog()
                error = ""
            except (psycopg.Error, OSError, TimeoutError, MessengerError) as exc:
                # a shard still coming back: its pool reconnects
                error = f"{type(exc).__name__}: {exc}"
            if last and not error and all(b.pending == 0 for b in last):
                return BacklogState(0, sum(b.dead for b in last), round(time.monotonic() - started, 1))
            if time.monotonic() - started > timeout_s:
                return BacklogState(sum(b.pending for b in last), sum(b.dead for b in last), None, error)
            await asyncio.sleep(0.5)


async def check_references(topology: Topology) -> ReferencesState:
    async with PrimaryPools(topology) as pools:
        report = await audit(pools, reference_checks(), OutboxRelay(pools, HANDLERS))
    if report.ok:
        return ReferencesState(True, "clean")
    if report.unreachable:
        return ReferencesState(False, "unreachable: " + ", ".join(report.unreachable))
    return ReferencesState(False, f"{report.remaining} problem(s)")
