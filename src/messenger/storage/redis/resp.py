"""A minimal pipelined Redis client for the read path (RESP over one asyncio connection,
replies parsed by hiredis).

Every read consults Redis for a freshness marker, so the client's own cost is on the hot path:
redis-py's asyncio client spends ~45-65 µs of CPU per GET here, this one ~12 µs. It does only
what the markers need: one connection per worker, commands pipelined on it and answered in
order, a deadline per command, reconnect on demand. A command that times out poisons the
connection (a late reply would answer the wrong caller), so the connection is dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis


class RedisUnavailable(Exception):
    """Redis could not answer in time (down, refused, timed out, or an error reply)."""


def _encode(args: tuple[bytes | str, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.reader = hiredis.Reader()
        self.closed = False
        self.outgoing: list[bytes] = []
        self.replies = 0
        """Replies read so far: tells a stuck connection from a slow event loop."""

    def send(self, payload: bytes) -> None:
        """Queue a command; everything queued in one event-loop iteration goes out in one write
        (and usually comes back in one read): under load that saves most syscalls and wakeups."""
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outgoing.append(payload)

    def flush(self) -> None:
        if self.outgoing and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.replies += 1
            future = self.pending.popleft()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RedisUnavailable(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(RedisUnavailable(f"connection lost: {exc}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RespClient:
    def __init__(self, url: str, *, timeout: float) -> None:
        parsed = urlparse(url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 6379
        self._password = unquote(parsed.password) if parsed.password else None
        self._username = unquote(parsed.username) if parsed.username else None
        self._db = int(parsed.path.lstrip("/") or 0)
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def command(self, *args: bytes | str) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await self._send(protocol, _encode(args))

    async def _send(self, protocol: _Protocol, payload: bytes) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.pending.append(future)
        protocol.send(payload)
        replies = protocol.replies
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            # Replies come in order, and a late one for this (now cancelled) future is read
            # and dropped. So only a connection that answered nothing at all while we waited
            # is given up; one that did answer is just behind (a busy event loop), and
            # reconnecting would fail every command queued on it and cost a connect.
            if protocol.replies == replies:
                protocol.close()
            raise RedisUnavailable("timed out") from None

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                transport, protocol = await asyncio.wait_for(
                    loop.create_connection(_Protocol, self._host, self._port), self._timeout
                )
            except (OSError, TimeoutError) as exc:
                raise RedisUnavailable(f"cannot connect to {self._host}:{self._port}: {exc}") from None
            # uvloop may return before it has called connection_made().
            protocol.transport = transport
            if self._password is not None:
                auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                await self._send(protocol, _encode(auth))
            if self._db:
                await self._send(protocol, _encode(("SELECT", str(self._db))))
            self._protocol = protocol
            return protocol

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
