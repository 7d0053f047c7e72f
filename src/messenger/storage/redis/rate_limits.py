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


# Refill by elapsed time, take one token if there is one; Redis's clock, so every worker agrees.
_TAKE_TOKEN = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < 1 then
    return {0, tostring((1 - tokens) / rate)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {1, '0'}
"""


class TokenBucket:
    """`rate` actions per second per key on average, bursts of up to `burst` (e.g. message sends
    per user). Fails open when Redis cannot be reached, like RateLimit."""

    def __init__(self, redis: Redis, name: str, *, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._script = redis.register_script(_TAKE_TOKEN)
        self._prefix = f"tb:{name}:"
        self.rate = rate
        self.burst = burst

    async def take(self, key: str) -> None:
        """Take a token for `key`, or raise RateLimited with the seconds until the next one."""
        try:
            allowed, wait = await self._script(keys=[self._prefix + key], args=[self.rate, self.burst])
        except (RedisError, OSError) as exc:
            log.warning("token bucket %s not enforced: %s", self._prefix, exc)
            return
        if not int(allowed):
            raise RateLimited("sending too fast, slow down", retry_after=float(wait))
