"""Fixed-window rate limits in Redis, shared by every worker process."""

from __future__ import annotations

import logging
from contextlib import suppress

from redis.asyncio import Redis
from redis.exceptions import RedisError

from messenger.domain.errors import RateLimited

log = logging.getLogger(__name__)


class RateLimit:
    """At most `limit` hits per `window_s` seconds per key, e.g. login failures per account.

    When Redis cannot be reached the limit is not enforced (logged): sign-in staying up matters
    more than this defence-in-depth, which argon2's cost already backs.
    """

    def __init__(self, redis: Redis, name: str, limit: int, window_s: int) -> None:
        self._redis = redis
        self._prefix = f"rl:{name}:"
        self.limit = limit
        self.window_s = window_s

    async def check(self, key: str) -> None:
        """Raise RateLimited (with the seconds until the window ends) when `key` is over."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self._prefix + key)
                pipe.ttl(self._prefix + key)
                count, ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate limit %s not enforced: %s", self._prefix, exc)
            return
        if count is not None and int(count) >= self.limit:
            raise RateLimited("too many attempts, try again later", retry_after=max(1, int(ttl)))

    async def hit(self, key: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(self._prefix + key)
                pipe.expire(self._prefix + key, self.window_s, nx=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate limit %s not counted: %s", self._prefix, exc)

    async def reset(self, key: str) -> None:
        with suppress(RedisError, OSError):
            await self._redis.delete(self._prefix + key)
