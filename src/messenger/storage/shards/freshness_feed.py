"""This worker's copy of the recent freshness markers, so that a read asks Redis nothing.

Every keyed read needs to know whether its key was written in the last few seconds
(freshness.py). Asking Redis was one round trip per read, the largest cost a GET by id had
beyond the bare stack's (docs/performance.md). Instead, the script that stores a marker also
publishes it on `FEED_CHANNEL`, and every worker subscribes on a socket of its own and keeps
the markers it heard for their TTL. A lookup reads that socket first (non-blocking: one
`recv` that usually finds nothing), then answers from memory. It is as good as the Redis
read it replaces because:

- **Complete.** A marker stored before the subscription was confirmed has expired one TTL
  after it; from then on every live marker was heard. Before that, while the subscription is
  down, and while the Redis pings go unanswered, the feed says it does not know and the read
  asks Redis as before.
- **In time.** A writer answers its client only after one more Redis round trip begun after the
  script's reply (`FreshnessMarkers.mark`'s barrier). Redis writes what a command published to
  every subscriber's socket before it reads the next command, so once anyone can have heard of
  the write, its marker already sits in this worker's socket buffer, where the lookup reads it.
- **Not behind.** Redis holds a message back in its own buffer only for a subscriber with more
  than 64 KiB waiting (or a full socket buffer: ours asks for `RECEIVE_BUFFER_BYTES`). A read
  of the socket that brings that much marks the feed as catching up for `CATCH_UP_S`, and reads
  ask Redis meanwhile.

Bounded: past `MAX_KEYS` live markers (a write storm) the feed forgets them all and asks Redis
for one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import time
from collections import deque
from collections.abc import Callable

import hiredis

from messenger.storage.redis.resp import RedisAddress, encode_command

log = logging.getLogger(__name__)

FEED_CHANNEL = "messenger:freshness"
"""Where the marker script publishes `<key> <position as 16 hex digits>`."""
MAX_KEYS = 100_000
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
BEHIND_BYTES = 64 * 1024
"""A read of the socket this large means Redis may still hold more for us (it writes a client
at most 64 KiB an event loop turn)."""
CATCH_UP_S = 0.1
PING_INTERVAL_S = 0.25
SILENCE_LIMIT_S = 0.5
"""A subscription that has heard nothing this long after a ping is not trusted, then dropped.
A subscription cut off without a word (a partition) is therefore trusted for at most
PING_INTERVAL_S + SILENCE_LIMIT_S: in that time a marker that could not reach Redis either is
unknown to this worker (the worker that wrote it reads the key from its primary)."""
RECONNECT_DELAY_S = 0.5
_READ_CHUNK = 256 * 1024


def feed_message(key: str, lsn: int) -> str:
    return f"{key} {lsn:016x}"


def parse_feed_message(data: bytes) -> tuple[str, int] | None:
    key, _, position = data.decode().rpartition(" ")
    try:
        return key, int(position, 16)
    except ValueError:
        return None


class FreshnessFeed:
    """Markers heard on the feed, key -> (position, until when). Used from one event loop."""

    def __init__(
        self, url: str, *, ttl_s: float, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._address = RedisAddress.parse(url)
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._markers: dict[str, tuple[int, float]] = {}
        self._expiry: deque[tuple[float, str]] = deque()
        self._reader = hiredis.Reader()
        self._buffer = bytearray(_READ_CHUNK)
        """Read into, not allocated per read: most reads find nothing, and a large bytes
        object per `recv` would cost more than the Redis round trip this saves."""
        self._sock: socket.socket | None = None
        self._readable = select.poll()
        """Asks the kernel whether the socket has data: cheaper than a `recv` that raises."""
        self._subscribed = False
        self._complete_from = float("inf")
        """When the markers heard cover every live one (a TTL after the subscription)."""
        self._ping_unanswered_since: float | None = None
        """When the oldest ping that nothing has been heard since went out."""
        self._catching_up_until = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- what reads and writes ask ------------------------------------------------------

    def lookup(self, key: str) -> tuple[bool, int | None]:
        """(True, position or None) when the feed knows whether the key was written lately;
        (False, None) when it cannot say and the caller must ask Redis."""
        if self._sock is not None:
            self.drain()
        now = self._clock()
        if not self._trusted(now):
            return False, None
        entry = self._markers.get(key)
        if entry is None or now >= entry[1]:
            return True, None
        return True, entry[0]

    def heard(self, key: str, lsn: int) -> None:
        """A marker: keep the highest position, for a TTL from now (Redis's runs from the
        script, a little earlier: this copy never ends before it)."""
        now = self._clock()
        until = now + self._ttl_s
        previous = self._markers.get(key)
        if previous is not None and previous[0] > lsn and now < previous[1]:
            lsn = previous[0]
        self._markers[key] = (lsn, until)
        self._expiry.append((until, key))
        self._forget_expired(now)
        if len(self._markers) > MAX_KEYS:
            log.warning("freshness feed: over %d live markers; asking Redis for %.1f s", MAX_KEYS, self._ttl_s)
            self._markers.clear()
            self._expiry.clear()
            self._complete_from = max(self._complete_from, now + self._ttl_s)

    def _forget_expired(self, now: float) -> None:
        expiry, markers = self._expiry, self._markers
        while expiry and expiry[0][0] <= now:
            until, key = expiry.popleft()
            entry = markers.get(key)
            if entry is not None and entry[1] <= until:
                del markers[key]

    def __len__(self) -> int:
        return len(self._markers)

    @property
    def complete(self) -> bool:
        """Whether lookups answer from the feed now."""
        return self._trusted(self._clock())

    def _trusted(self, now: float) -> bool:
        unanswered = self._ping_unanswered_since
        return (
            self._subscribed and now >= self._complete_from and now >= self._catching_up_until
            and (unanswered is None or now - unanswered < SILENCE_LIMIT_S)
        )

    # -- the subscription ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._subscribe_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop()

    def drain(self) -> None:
        """Read what the socket holds, without waiting, and apply it."""
        sock = self._sock
        if sock is None or not self._readable.poll(0):
            return
        got = 0
        buffer = self._buffer
        while True:
            try:
                size = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lost(f"read failed: {exc}")
                return
            if not size:
                self._lost("closed by Redis")
                return
            got += size
            self._reader.feed(buffer, 0, size)  # type: ignore[arg-type]  # any buffer, says its C code
        if not got:
            return
        self._ping_unanswered_since = None
        if got >= BEHIND_BYTES:
            now = self._clock()
            self._catching_up_until = now + CATCH_UP_S
        try:
            while (reply := self._reader.gets()) is not False:
                self._apply(reply)
        except hiredis.ProtocolError as exc:
            self._lost(f"unreadable reply: {exc}")

    def _apply(self, reply: object) -> None:
        if isinstance(reply, hiredis.ReplyError):  # NOAUTH, say: start over; reads ask Redis meanwhile
            self._lost(f"Redis refused: {reply}")
            return
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == b"message" and len(reply) == 3:
            parsed = parse_feed_message(reply[2])
            if parsed is not None:
                self.heard(*parsed)
        elif kind == b"subscribe":
            self._subscribed = True
            self._complete_from = self._clock() + self._ttl_s

    async def _subscribe_forever(self) -> None:
        while True:
            try:
                await self._subscribe()
                while self._sock is not None:
                    await asyncio.sleep(PING_INTERVAL_S)
                    self._ping()
            except (OSError, TimeoutError, hiredis.ProtocolError) as exc:
                log.warning("freshness feed: cannot subscribe (%s); reads ask Redis", exc)
            self._drop()
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def _subscribe(self) -> None:
        loop = asyncio.get_running_loop()
        address = self._address
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, where = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            await asyncio.wait_for(loop.sock_connect(sock, where), self._timeout_s)
            auth = address.auth_command()
            if auth is not None:
                await loop.sock_sendall(sock, encode_command(auth))
                reply = await self._read_one(sock)
                if isinstance(reply, hiredis.ReplyError):
                    raise OSError(f"AUTH refused: {reply}")
            await loop.sock_sendall(sock, encode_command(("SUBSCRIBE", FEED_CHANNEL)))
        except BaseException:
            sock.close()
            raise
        self._reader = hiredis.Reader()
        self._sock = sock
        self._ping_unanswered_since = None
        self._readable = select.poll()
        self._readable.register(sock.fileno(), select.POLLIN)
        loop.add_reader(sock.fileno(), self.drain)

    async def _read_one(self, sock: socket.socket) -> object:
        loop = asyncio.get_running_loop()
        reader = hiredis.Reader()
        while (reply := reader.gets()) is False:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), self._timeout_s)
            if not data:
                raise OSError("closed by Redis")
            reader.feed(data)
        return reply

    def _ping(self) -> None:
        self.drain()  # an answer may be waiting: this worker's loop may have been busy
        sock = self._sock
        if sock is None:
            return
        unanswered = self._ping_unanswered_since
        if unanswered is not None:
            if self._clock() - unanswered >= SILENCE_LIMIT_S:
                self._lost(f"no answer to a ping for {SILENCE_LIMIT_S} s")
            return
        self._ping_unanswered_since = self._clock()
        try:
            sock.send(encode_command(("PING",)))
        except OSError as exc:
            self._lost(f"ping failed: {exc}")

    def _lost(self, why: str) -> None:
        if self._sock is not None:
            log.warning("freshness feed lost (%s); reads ask Redis until it is back", why)
        self._drop()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        self._subscribed = False
        self._complete_from = float("inf")
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
