"""The messaging phase: accounts, groups and WebSockets set up, then a timed send/history/inbox mix.

Setup (not timed): `users` accounts are registered and signed in (POST /api/v1/accounts, POST
/api/v1/auth/login), shuffled into groups of `group_size` (random users, so each group's members
sit on different shards), and `sockets` WebSockets are opened on GET /api/v1/ws, round-robin over
the accounts. Each new connection lands on whichever granian worker accepts it, so most deliveries
cross workers (through Redis pub/sub).

Timed part: `connections` keep-alive HTTP virtual users, each signed in as one account, run the
messaging scenario (60 % send, 25 % history page, 15 % inbox), every response validated. Every
message body is `bench <client_message_id>`; the send's completion time (its 201 response read)
is kept, and every `message.created` frame a socket receives for it gives one delivery sample:
frame received - send completed. A frame that beats the HTTP response counts as 0 ms (and as
`early`: common, since the server publishes right after the commit, before the response goes
out), so the end-to-end figure, send started -> frame received, is reported beside it. After the deadline the sockets stay open `DRAIN_S` for frames still in flight; frames
expected (the sockets of the conversation's members, per successful send) but never received are
reported as `missing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from messenger.bench.loadgen import (
    Connection,
    CpuMeter,
    Recorder,
    RequestFailed,
    TickCallback,
    drive,
    raise_fd_limit,
)
from messenger.bench.phase import (
    CONNECT_CONCURRENCY,
    LatencySummary,
    PhaseResult,
    Target,
    run_virtual_user,
    summarise,
)
from messenger.bench.scenarios import (
    BENCH_BODY_PREFIX,
    CONVERSATIONS,
    MessagingUser,
    Scenario,
)

PASSWORD = "bench-password-1"
SETUP_CONCURRENCY = 8
"""Parallel setup requests: sign-ups hash passwords (argon2, ~28 ms of a core each)."""
SOCKET_CONNECT_CONCURRENCY = 64
T = TypeVar("T")
DRAIN_S = 1.0
"""Seconds the sockets keep listening after the timed part, for frames still in flight."""


class SetupFailed(Exception):
    """The accounts, groups or sockets the phase needs could not be set up."""


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    token: str


@dataclass
class DeliveryTracker:
    """Send completion times by client_message_id, and the frames that matched them."""

    sockets_per_conversation: dict[str, int] = field(default_factory=dict)
    completed: dict[str, tuple[float, float]] = field(default_factory=dict)
    """client_message_id -> (send started, send completed)."""
    early: dict[str, list[float]] = field(default_factory=dict)
    """Frames received before their send completed (or for a send that failed)."""
    delays: array[float] = field(default_factory=lambda: array("d"))
    """Send completed -> frame received (0 when the frame came first)."""
    from_start: array[float] = field(default_factory=lambda: array("d"))
    """Send started (request written) -> frame received: end to end, never negative."""
    expected: int = 0
    early_count: int = 0
    frames: int = 0
    """message.created frames received for benchmark messages."""
    recording: bool = True

    def sent(self, conversation_id: str, client_id: str, started: float, done: float) -> None:
        if not self.recording:
            return
        self.completed[client_id] = (started, done)
        self.expected += self.sockets_per_conversation.get(conversation_id, 0)
        for received in self.early.pop(client_id, ()):
            self.delays.append(max(0.0, received - done))
            self.from_start.append(received - started)
            self.early_count += 1

    def received(self, client_id: str, at: float) -> None:
        self.frames += 1
        times = self.completed.get(client_id)
        if times is None:
            self.early.setdefault(client_id, []).append(at)
        else:
            self.delays.append(max(0.0, at - times[1]))
            self.from_start.append(at - times[0])

    def summary(self, sockets_open: int, socket_errors: dict[str, int]) -> dict[str, Any]:
        matched = len(self.delays)
        return {
            "sockets": sockets_open,
            "socket_errors": socket_errors,
            "sends": len(self.completed),
            "frames": self.frames,
            "expected": self.expected,
            "matched": matched,
            "missing": max(0, self.expected - matched),
            "early": self.early_count,
            "unmatched": sum(len(v) for v in self.early.values()),
            "latency": asdict(LatencySummary.of(self.delays)),
            "from_send_start": asdict(LatencySummary.of(self.from_start)),
        }


async def request_json(conn: Connection, method: str, path: str, body: Any, headers: str = "") -> Any:
    """A setup request (no body when `body` is None), retried on 429; the decoded body of a 200/201."""
    payload = msgspec.json.encode(body) if body is not None else None
    for _ in range(20):
        try:
            response = await conn.request(method, path, payload, headers)
        except RequestFailed as exc:
            raise SetupFailed(f"{method} {path}: {exc}") from None
        if response.status == 429:
            await asyncio.sleep(1.0)
            continue
        if response.status not in (200, 201):
            raise SetupFailed(f"{method} {path} -> {response.status} {response.body[:200]!r}")
        return msgspec.json.decode(response.body)
    raise SetupFailed(f"{method} {path}: still rate limited; see MESSAGING_ENV in bench/server.py")


async def on_connections(
    target: Target, items: Sequence[T], work: Callable[[Connection, T], Awaitable[None]], *, timeout: float
) -> None:
    """`work` for each item in order, over SETUP_CONCURRENCY keep-alive connections at a time."""
    pending = list(reversed(items))

    async def worker() -> None:
        conn = Connection(target.host, target.port, timeout)
        try:
            while pending:
                await work(conn, pending.pop())
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(min(SETUP_CONCURRENCY, len(items)))))


async def register_accounts(target: Target, count: int, timeout: float) -> list[Account]:
    run = uuid.uuid4().hex[:8]
    accounts: list[Account | None] = [None] * count

    async def register(conn: Connection, i: int) -> None:
        handle = f"b{run}_{i}"
        await request_json(
            conn,
            "POST",
            "/api/v1/accounts",
            {
                "username": handle,
                "email": f"{handle}@bench.example.com",
                "password": PASSWORD,
                "first_name": "Bench",
                "last_name": f"User {i}",
            },
        )
        tokens = await request_json(conn, "POST", "/api/v1/auth/login", {"login": handle, "password": PASSWORD})
        accounts[i] = Account(tokens["user_id"], tokens["access_token"])

    await on_connections(target, range(count), register, timeout=max(timeout, 30.0))
    return [a for a in accounts if a is not None]


def auth_header(account: Account) -> str:
    return f"Authorization: Bearer {account.token}\r\n"


async def create_groups(
    target: Target, accounts: list[Account], group_size: int, rng: random.Random, timeout: float
) -> dict[str, list[Account]]:
    """Random groups of `group_size` (each account in one); conversation id -> members."""
    shuffled = accounts[:]
    rng.shuffle(shuffled)
    size = max(2, group_size)
    chunks = [shuffled[i : i + size] for i in range(0, len(shuffled), size)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:  # no one alone in a group
        chunks[-2] += chunks.pop()
    groups: dict[str, list[Account]] = {}
    conn = Connection(target.host, target.port, max(timeout, 30.0))
    try:
        for n, members in enumerate(chunks):
            out = await request_json(
                conn,
                "POST",
                CONVERSATIONS,
                {
                    "type": "group",
                    "title": f"bench group {n}",
                    "member_ids": [m.user_id for m in members[1:]],
                },
                auth_header(members[0]),
            )
            groups[out["conversation"]["id"]] = members
    finally:
        conn.close()
    return groups


@dataclass
class SocketPool:
    """The phase's WebSockets: each reads frames and hands benchmark messages to the tracker."""

    target: Target
    tracker: DeliveryTracker
    timeout: float
    sockets: list[ClientConnection] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    per_user: dict[str, int] = field(default_factory=dict)
    """Sockets open per user id."""

    def _error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.samples.setdefault(kind, detail[:300])

    async def open(self, accounts: Sequence[Account], count: int) -> None:
        gate = asyncio.Semaphore(SOCKET_CONNECT_CONCURRENCY)

        async def one(account: Account) -> None:
            url = f"ws://{self.target.host}:{self.target.port}/api/v1/ws?access_token="
            async with gate:
                try:
                    ws = await websockets.connect(
                        url + account.token,
                        open_timeout=max(self.timeout, 30.0),
                        compression=None,
                        max_queue=None,
                        ping_interval=None,
                    )
                    ready = msgspec.json.decode(
                        await asyncio.wait_for(ws.recv(), max(self.timeout, 30.0))
                    )
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    self._error("connect", repr(exc))
                    return
            if ready.get("type") != "ready" or ready.get("user_id") != account.user_id:
                self._error("validation", f"first frame {ready!r}")
                await ws.close()
                return
            self.sockets.append(ws)
            self.per_user[account.user_id] = self.per_user.get(account.user_id, 0) + 1
            self.readers.append(asyncio.ensure_future(self._read(ws)))

        await asyncio.gather(*(one(accounts[i % len(accounts)]) for i in range(count)))

    async def _read(self, ws: ClientConnection) -> None:
        decode = msgspec.json.decode
        try:
            async for raw in ws:
                at = time.perf_counter()
                frame = decode(raw)
                kind = frame.get("type")
                if kind == "message.created":
                    body = (frame.get("message") or {}).get("body") or ""
                    if body.startswith(BENCH_BODY_PREFIX):
                        self.tracker.received(body[len(BENCH_BODY_PREFIX) :], at)
                elif kind == "ping":
                    await ws.send('{"type":"pong"}')
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code not in (1000, 1001):
                self._error("closed", f"close {exc.rcvd.code} {exc.rcvd.reason}")
        except msgspec.DecodeError as exc:
            self._error("protocol", repr(exc))

    async def close(self) -> None:
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


def conversations_by_member(groups: dict[str, list[Account]]) -> dict[str, list[str]]:
    """User id -> the groups it is in."""
    out: dict[str, list[str]] = {}
    for cid, members in groups.items():
        for member in members:
            out.setdefault(member.user_id, []).append(cid)
    return out


@dataclass
class MessagingSetup:
    accounts: list[Account]
    groups: dict[str, list[Account]]
    conversations_of: dict[str, list[str]]
    """User id -> the groups it is in."""
    tracker: DeliveryTracker
    pool: SocketPool


async def set_up_messaging(
    target: Target, users: int, group_size: int, sockets: int, rng: random.Random, timeout: float, note: Any = None
) -> MessagingSetup:
    """Accounts signed in, shuffled into groups, and `sockets` WebSockets open on them."""
    if note:
        note(f"messaging setup: {users} accounts, groups of {group_size}, {sockets} sockets")
    accounts = await register_accounts(target, users, timeout)
    if len(accounts) < 2:
        raise SetupFailed("fewer than two accounts registered")
    groups = await create_groups(target, accounts, group_size, rng, timeout)
    conversations_of: dict[str, list[str]] = {a.user_id: [] for a in accounts} | conversations_by_member(groups)
    tracker = DeliveryTracker()
    pool = SocketPool(target, tracker, timeout)
    await pool.open(accounts, sockets)
    if note:
        note(f"{len(pool.sockets)} sockets open, {sum(pool.errors.values())} failed")
    tracker.sockets_per_conversation = {
        cid: sum(pool.per_user.get(m.user_id, 0) for m in members)
        for cid, members in groups.items()
    }
    return MessagingSetup(accounts, groups, conversations_of, tracker, pool)


async def run_messaging_phase(
    target: Target,
    scenario: Scenario,
    connections: int,
    duration: float,
    *,
    sockets: int = 1_000,
    users: int = 250,
    group_size: int = 5,
    timeout: float = 10.0,
    think_time: float = 0.0,
    seed: int = 0,
    on_tick: TickCallback | None = None,
    server_group: int | None = None,
    note: Any = None,
) -> PhaseResult:
    """Set up accounts, groups and sockets, then run `scenario` on `connections` HTTP users."""
    raise_fd_limit(connections + sockets + 1024)
    rng = random.Random(seed)
    users = max(2, min(users, max(sockets, connections, 2)))
    setup = await set_up_messaging(target, users, group_size, sockets, rng, timeout, note)
    accounts, groups, conversations_of = setup.accounts, setup.groups, setup.conversations_of
    tracker, pool = setup.tracker, setup.pool

    recorder = Recorder()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    base = random.Random(rng.getrandbits(64))

    async def user_loop(number: int, deadline: float) -> None:
        account = accounts[number % len(accounts)]
        mine = conversations_of[account.user_id]

        vu = MessagingUser(
            number=number,
            conn=Connection(target.host, target.port, timeout),
            recorder=recorder,
            known_ids=(),
            rng=random.Random(base.getrandbits(64)),
            headers=auth_header(account),
            user_id=account.user_id,
            conversations=mine,
            sent=tracker.sent,
        )
        await run_virtual_user(vu, scenario, deadline, gate, think_time)

    meter = CpuMeter(server_group)
    try:
        wall = await drive(user_loop, connections, duration, recorder, on_tick)
        cpu = meter.stop()
        tracker.recording = False
        await asyncio.sleep(DRAIN_S)
    finally:
        await pool.close()
    result = summarise(scenario.name, connections, wall, recorder, cpu)
    delivery = tracker.summary(len(pool.sockets), dict(pool.errors))
    delivery["socket_error_samples"] = dict(pool.samples)
    delivery["users"] = len(accounts)
    delivery["groups"] = len(groups)
    delivery["group_size"] = group_size
    result.extra["delivery"] = delivery
    return result
