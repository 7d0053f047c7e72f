"""WebSocket sessions that behave like the chat page: reconnect with backoff, then resume.

One session per account, for the whole run. It connects with `?resume=1` and sends `resume`
with the last seq it saw per conversation (0 at first, so it owes every message ever sent);
each `message.created` frame is written into the ledger as delivered to its user. When the
socket closes (a killed worker, Redis gone: 1011/1012/1013, a dropped connection) it waits
0.5 s doubling to 5 s and does it again, so after recovery a session has missed nothing iff
the server's resume is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from messenger.bench.messaging import Account
from messenger.chaos.ledger import Ledger

BACKOFF_S = (0.5, 5.0)
OPEN_TIMEOUT_S = 10.0

_decode = msgspec.json.decode
_encode = msgspec.json.encode


@dataclass
class SocketSession:
    account: Account
    conversations: Sequence[str]
    url: str
    ledger: Ledger
    positions: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    drops: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after each `resumed` frame: the replay is done, live events flow."""
    _ws: ClientConnection | None = None

    def __post_init__(self) -> None:
        self.positions = dict.fromkeys(self.conversations, 0)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random()
        delay = BACKOFF_S[0]
        while not stop.is_set():
            try:
                await self._session()
                delay = BACKOFF_S[0]
            except (OSError, TimeoutError, websockets.WebSocketException, msgspec.DecodeError) as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            if stop.is_set():
                return
            self.drops += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * (0.5 + rng.random()))
            delay = min(BACKOFF_S[1], delay * 2)

    async def _session(self) -> None:
        url = f"{self.url}?access_token={self.account.token}&resume=1"
        async with websockets.connect(
            url, open_timeout=OPEN_TIMEOUT_S, compression=None, max_queue=None, ping_interval=None,
        ) as ws:
            self._ws = ws
            try:
                ready = _decode(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
                if ready.get("type") != "ready":
                    raise websockets.InvalidMessage(f"first frame {ready!r}")
                self.connects += 1
                self.resumed.clear()
                await ws.send(_encode({"type": "resume", "conversations": self.positions}).decode())
                async for raw in ws:
                    await self._frame(ws, _decode(raw))
            finally:
                self._ws = None

    async def _frame(self, ws: ClientConnection, frame: dict[str, object]) -> None:
        kind = frame.get("type")
        cid = frame.get("conversation_id")
        seq = frame.get("seq")
        if isinstance(cid, str) and isinstance(seq, int) and seq > self.positions.get(cid, 0):
            self.positions[cid] = seq
        if kind == "message.created":
            message = frame.get("message")
            if isinstance(message, dict) and isinstance(message.get("id"), str):
                self.ledger.delivered(self.account.user_id, message["id"])
        elif kind == "resumed":
            self.resumed.set()
        elif kind == "ping":
            await ws.send('{"type":"pong"}')
        elif kind == "error":
            self.errors["error frame"] = self.errors.get("error frame", 0) + 1

    async def reconnect(self) -> None:
        """Drop the connection on purpose: the run loop reconnects and resumes at once."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)


class SocketFleet:
    def __init__(self, sessions: list[SocketSession]) -> None:
        self.sessions = sessions
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(s.run(self._stop)) for s in self.sessions]

    async def wait_resumed(self, timeout_s: float) -> int:
        """Wait for every session to be connected and resumed; how many are."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(s.resumed.wait() for s in self.sessions)), timeout_s
            )
        return sum(s.resumed.is_set() for s in self.sessions)

    async def reconnect_all(self) -> None:
        for session in self.sessions:
            session.resumed.clear()
        await asyncio.gather(*(s.reconnect() for s in self.sessions))

    @property
    def connects(self) -> int:
        return sum(s.connects for s in self.sessions)

    @property
    def drops(self) -> int:
        return sum(s.drops for s in self.sessions)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*(s.reconnect() for s in self.sessions))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
