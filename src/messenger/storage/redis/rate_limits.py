"""Rate limits in Redis, shared by every worker process; each check is one Lua script, so the
check and the count are one atomic step (N parallel requests cannot all pass a limit of M < N).

- `FixedWindow`: at most `limit` per window per key (sign-in attempts per client address,
  registrations per address, member adds per user).
- `Backoff`: a growing delay after repeated failures (wrong passwords per account): the owner
  is slowed down, never locked out for the whole window.
- `TokenBucket`: a rate with bursts (message sends, edits, group creation per user).

Each limit either fails closed (Redis unreachable → `LimiterUnavailable`, a 503: sign-in and
password changes, where an unlimited guesser is the threat) or open (logged, the request goes
on: the others, where availability matters more than the defence).
Scripts read Redis's clock, so every worker agrees on time.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from messenger.domain.errors import LimiterUnavailable, RateLimited

log = logging.getLogger(__name__)

# Count first, then compare: the attempt that makes the count exceed the limit is refused, and
# so is every later one in the window; no attempt is ever uncounted.
_FIXED_WINDOW = """
local n = redis.call('INCRBY', KEYS[1], tonumber(ARGV[2]))
if n == tonumber(ARGV[2]) then
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
if n > tonumber(ARGV[1]) then
    local ttl = redis.call('TTL', KEYS[1])
    if ttl < 0 then
        redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
        ttl = tonumber(ARGV[3])
    end
    return {0, ttl}
end
return {1, 0}
"""

# Every attempt counts as a failure until `succeeded` clears the key, so attempts still being
# verified count too. From the `free`-th on, each attempt pushes the next allowed moment out by
# base * 2^(n - free), capped; an attempt before that moment is refused and not counted.
_BACKOFF = """
local free, base, cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'n', 'next')
local n = tonumber(state[1]) or 0
local next_at = tonumber(state[2]) or 0
if now < next_at then
    return {0, tostring(next_at - now)}
end
n = n + 1
if n >= free then
    next_at = now + math.min(cap, base * 2 ^ (n - free))
end
redis.call('HSET', KEYS[1], 'n', n, 'next', tostring(next_at))
redis.call('EXPIRE', KEYS[1], ttl)
return {1, '0'}
"""

# Refill by elapsed time, take `cost` tokens if there are that many.
_TAKE_TOKENS = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < cost then
    return {0, tostring((cost - tokens) / rate)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - cost), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {1, '0'}
"""

_REDIS_ERRORS = (RedisError, OSError)


class _Limit:
    def __init__(self, redis: Redis, kind: str, name: str, script: str, *, fail_closed: bool) -> None:
        self._script = redis.register_script(script)
        self._redis = redis
        self._prefix = f"{kind}:{name}:"
        self.name = name
        self.fail_closed = fail_closed

    async def _run(self, key: str, *args: float | int | str) -> Any:
        """The script's answer; None when Redis failed and this limit fails open."""
        try:
            return await self._script(keys=[self._prefix + key], args=list(args))
        except _REDIS_ERRORS as exc:
            if self.fail_closed:
                log.warning("limit %s unavailable, refusing: %s", self.name, exc)
                raise LimiterUnavailable(self.name) from None
            log.warning("limit %s not enforced: %s", self.name, exc)
            return None


class FixedWindow(_Limit):
    """At most `limit` per `window_s` seconds per key."""

    def __init__(self, redis: Redis, name: str, limit: int, window_s: int, *, fail_closed: bool = False) -> None:
        if limit < 1 or window_s < 1:
            raise ValueError("a fixed window needs limit >= 1 and window_s >= 1")
        super().__init__(redis, "rl", name, _FIXED_WINDOW, fail_closed=fail_closed)
        self.limit = limit
        self.window_s = window_s

    async def take(self, key: str, cost: int = 1, *, message: str = "too many attempts, try again later") -> None:
        """Count `cost` for `key`; raise RateLimited (seconds until the window ends) when over."""
        answer = await self._run(key, self.limit, cost, self.window_s)
        if answer is not None and not int(answer[0]):
            raise RateLimited(message, retry_after=max(1, int(answer[1])))


class Backoff(_Limit):
    """`free` attempts per key, then a delay doubling from `base_s` up to `max_s` between
    attempts, until one succeeds; forgotten after `ttl_s` without attempts."""

    def __init__(
        self, redis: Redis, name: str, *, free: int, base_s: float, max_s: float, ttl_s: int,
        fail_closed: bool = True,
    ) -> None:
        if free < 1 or base_s <= 0 or max_s < base_s:
            raise ValueError("a backoff needs free >= 1 and 0 < base_s <= max_s")
        super().__init__(redis, "bo", name, _BACKOFF, fail_closed=fail_closed)
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self.ttl_s = max(ttl_s, int(max_s) + 1)

    async def attempt(self, key: str) -> None:
        """Count an attempt for `key` (as failed until `succeeded`), or raise RateLimited with
        the seconds until the next one is allowed."""
        answer = await self._run(key, self.free, self.base_s, self.max_s, self.ttl_s)
        if answer is not None and not int(answer[0]):
            wait = float(answer[1])
            raise RateLimited(f"too many failed attempts, wait {wait:.1f} s", retry_after=wait)

    async def succeeded(self, key: str) -> None:
        with suppress(*_REDIS_ERRORS):
            await self._redis.delete(self._prefix + key)


class TokenBucket(_Limit):
    """`rate` per second per key on average, bursts of up to `burst`."""

    def __init__(self, redis: Redis, name: str, *, rate: float, burst: int, fail_closed: bool = False) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        super().__init__(redis, "tb", name, _TAKE_TOKENS, fail_closed=fail_closed)
        self.rate = rate
        self.burst = burst

    async def take(self, key: str, cost: int = 1, *, message: str = "too fast, slow down") -> None:
        """Take `cost` tokens for `key`, or raise RateLimited with the seconds until there are."""
        if cost > self.burst:
            raise RateLimited(f"{message} (at most {self.burst} at once)", retry_after=cost / self.rate)
        answer = await self._run(key, self.rate, self.burst, cost)
        if answer is not None and not int(answer[0]):
            raise RateLimited(message, retry_after=float(answer[1]))


# Members are a user's open sockets, scored by when they lapse (a worker that dies without
# releasing them leaves entries that expire on their own): drop the lapsed, then admit while
# fewer than `limit` remain.
_ACQUIRE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""


class ConcurrencyLimit(_Limit):
    """At most `limit` holders at once per key (open sockets per user), across workers. A holder
    refreshes its slot within `lease_s` (the heartbeat) or loses it."""

    def __init__(self, redis: Redis, name: str, limit: int, lease_s: float, *, fail_closed: bool = False) -> None:
        if limit < 1 or lease_s <= 0:
            raise ValueError("a concurrency limit needs limit >= 1 and lease_s > 0")
        super().__init__(redis, "cl", name, _ACQUIRE_SLOT, fail_closed=fail_closed)
        self.limit = limit
        self.lease_s = lease_s

    async def acquire(self, key: str, holder: str) -> bool:
        """Take (or refresh) `holder`'s slot; False when `key` already has `limit` others."""
        answer = await self._run(key, holder, self.limit, self.lease_s)
        return answer is None or bool(answer)

    async def release(self, key: str, holder: str) -> None:
        with suppress(*_REDIS_ERRORS):
            await self._redis.zrem(self._prefix + key, holder)
