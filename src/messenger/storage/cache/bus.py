"""Cache invalidations between workers and instances: Redis pub/sub, one channel per cache.

A write publishes the key it changed after its commit; every worker's subscriber (one
connection for all its caches) drops that key from the cache the channel names. Pub/sub is fire-and-forget, so a cache is only filled while its subscriber
is connected, and is cleared whenever the subscription is lost or (re)established: an
invalidation published while nobody listened is then harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "messenger:cache:"
USERS_CHANNEL = f"{CHANNEL_PREFIX}users"
MEMBERS_CHANNEL = f"{CHANNEL_PREFIX}members"
EVERY_KEY = "*"
"""Published instead of a key when a write may have changed rows nobody can name cheaply."""
RECONNECT_DELAY_S = 0.5


async def publish_invalidation(redis: Redis, channel: str, key: str) -> bool:
    """False when Redis did not take it (other workers keep the entry until its TTL; a Redis
    that is away has most likely cut their subscriptions too, which clears their caches)."""
    try:
        await redis.publish(channel, key)
    except (RedisError, OSError) as exc:
        log.warning("cache invalidation of %s not published: %s", key, exc)
        return False
    return True


def channel_of(cache: str) -> str:
    return f"{CHANNEL_PREFIX}{cache}"


class InvalidationBus:
    """Publishes invalidated keys and listens for those of other workers, for every cache of
    the worker: `on_key` maps a cache's name to what drops a key from it."""

    def __init__(
        self, publisher: Redis, subscriber: Redis, on_key: Mapping[str, Callable[[str], None]], *,
        on_connected: Callable[[bool], None],
    ) -> None:
        self._redis = publisher
        self._subscriber = subscriber  # no socket timeout: the channel may be quiet for long
        self._on_key = {channel_of(name): handler for name, handler in on_key.items()}
        self._on_connected = on_connected
        self._task: asyncio.Task[None] | None = None

    async def publish(self, cache: str, key: str) -> bool:
        return await publish_invalidation(self._redis, channel_of(cache), key)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._on_connected(False)

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                log.warning("cache invalidation subscriber lost: %s", exc)
            self._on_connected(False)
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def _listen(self) -> None:
        pubsub = self._subscriber.pubsub()
        try:
            await pubsub.subscribe(*self._on_key)
            confirmed = 0
            while True:
                # Connected once every channel's subscription is confirmed.
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    confirmed += 1
                    if confirmed == len(self._on_key):
                        self._on_connected(True)
                elif message["type"] == "message":
                    name = message["channel"]
                    handler = self._on_key.get(name.decode() if isinstance(name, bytes) else str(name))
                    data = message["data"]
                    if handler is not None:
                        handler(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            self._on_connected(False)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
