"""Live events between worker processes: Redis pub/sub, one channel per user.

A worker subscribes to the channel of each user who has a socket on it (the first socket
subscribes, the last one unsubscribes), and an event for a conversation is published to each
member's channel, so it reaches their sockets on whichever worker holds them. Publishing goes
through the pipelined RESP client; subscribing uses one connection per worker whose replies
hiredis parses as they arrive.

Pub/sub is fire-and-forget: a worker that loses its subscription connection may have missed
events, so it tells the hub (`on_lost`), which closes its sockets for their clients to resume.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

import hiredis

from messenger.domain.errors import LiveUnavailable
from messenger.storage.redis.resp import RedisAddress, RespClient, encode_command

log = logging.getLogger(__name__)

CHANNEL_PREFIX = b"live:user:"




def channel(user_id: uuid.UUID) -> bytes:
    return CHANNEL_PREFIX + str(user_id).encode()


class _Subscriber(asyncio.Protocol):
    def __init__(self, on_message: Callable[[bytes, bytes], None], on_lost: Callable[[], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.closed = False
        self.confirmations: dict[bytes, deque[asyncio.Future[None]]] = defaultdict(deque)
        self.replies: deque[asyncio.Future[object]] = deque()  # AUTH
        self._on_message = on_message
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, list) and reply and reply[0] == b"message":
                self._on_message(reply[1], reply[2])
            elif isinstance(reply, list) and reply and reply[0] == b"subscribe":
                waiting = self.confirmations.get(reply[1])
                if waiting:
                    future = waiting.popleft()
                    if not future.done():
                        future.set_result(None)
            elif isinstance(reply, list) and reply and reply[0] == b"unsubscribe":
                pass
            elif self.replies:
                future_reply = self.replies.popleft()
                if not future_reply.done():
                    future_reply.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = not self.closed
        self.closed = True
        failure = LiveUnavailable(f"subscription connection lost: {exc}")
        for waiting in self.confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(failure)
        for future_reply in self.replies:
            if not future_reply.done():
                future_reply.set_exception(failure)
        if was_open:
            self._on_lost()

    def send(self, *args: bytes | str) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(encode_command(args))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LiveBus:
    def __init__(
        self, url: str, *, timeout_s: float,
        on_frame: Callable[[uuid.UUID, bytes], None], on_lost: Callable[[], None],
    ) -> None:
        self._address = RedisAddress.parse(url)
        self._timeout_s = timeout_s
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._publisher = RespClient(url, timeout=timeout_s)
        self._subscriber: _Subscriber | None = None
        self._connecting = asyncio.Lock()

    async def publish(self, user_ids: Iterable[uuid.UUID], frame: bytes) -> None:
        """Publish `frame` to each user's channel (pipelined: one write, one read)."""
        calls = [self._publisher.command("PUBLISH", channel(u), frame) for u in user_ids]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise LiveUnavailable(f"publishing failed for {len(failed)} of {len(calls)} channels: {failed[0]}")

    async def subscribe(self, user_id: uuid.UUID) -> None:
        """Subscribe to the user's channel; returns once Redis confirmed it, so an event
        published after this returns reaches this worker."""
        subscriber = await self._connect()
        name = channel(user_id)
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        subscriber.confirmations[name].append(confirmed)
        subscriber.send("SUBSCRIBE", name)
        try:
            await asyncio.wait_for(confirmed, self._timeout_s * 4)
        except TimeoutError:
            subscriber.close()  # a subscription in an unknown state: start over
            raise LiveUnavailable("Redis did not confirm a subscription in time") from None
        finally:
            if not subscriber.confirmations[name]:
                subscriber.confirmations.pop(name, None)

    def unsubscribe(self, user_id: uuid.UUID) -> None:
        subscriber = self._subscriber
        if subscriber is not None and not subscriber.closed:
            subscriber.send("UNSUBSCRIBE", channel(user_id))

    async def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.closed = True  # a deliberate close is no loss to report
            self._subscriber.close()
            self._subscriber = None
        await self._publisher.close()

    def _message(self, name: bytes, data: bytes) -> None:
        if not name.startswith(CHANNEL_PREFIX):
            return
        try:
            user_id = uuid.UUID(name[len(CHANNEL_PREFIX):].decode())
        except ValueError:
            return
        self._on_frame(user_id, data)

    async def _connect(self) -> _Subscriber:
        async with self._connecting:
            if self._subscriber is not None and not self._subscriber.closed:
                return self._subscriber
            loop = asyncio.get_running_loop()
            address = self._address
            try:
                transport, subscriber = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Subscriber(self._message, self._on_lost), address.host, address.port
                    ),
                    self._timeout_s * 4,
                )
            except (OSError, TimeoutError) as exc:
                raise LiveUnavailable(f"cannot connect to Redis at {address.host}:{address.port}: {exc}") from None
            subscriber.transport = transport  # uvloop: see resp.py
            auth = address.auth_command()
            if auth is not None:
                answer: asyncio.Future[object] = loop.create_future()
                subscriber.replies.append(answer)
                subscriber.send(*auth)
                try:
                    reply = await asyncio.wait_for(answer, self._timeout_s * 4)
                except (TimeoutError, LiveUnavailable) as exc:
                    subscriber.close()
                    raise LiveUnavailable(f"Redis AUTH failed: {exc}") from None
                if isinstance(reply, hiredis.ReplyError):
                    subscriber.close()
                    raise LiveUnavailable(f"Redis AUTH failed: {reply}")
            self._subscriber = subscriber
            return subscriber

