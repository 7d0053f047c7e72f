"""Read-your-writes markers: after a write commits, the primary's WAL position is stored in
Redis under the written key for a few seconds. Any worker process serving a read of that key
then knows how far the shard's replica must have replayed before it may answer.

Redis being down must never produce a stale read, so a marker that cannot be read is reported
as unknown and the caller reads from the primary.
"""

from __future__ import annotations

import logging

from messenger.storage.redis.resp import RedisUnavailable, RespClient
from messenger.storage.shards.breaker import CircuitBreaker

log = logging.getLogger(__name__)

KEY_PREFIX = "ryw:"

# Keep the highest position: two writes of one key racing from two workers must not let the
# older position overwrite the newer one. Positions are fixed-width hex, so they compare as text.
_SET_IF_HIGHER = """
local current = redis.call('GET', KEYS[1])
if (not current) or current < ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


class FreshnessUnknown(Exception):
    """The marker store cannot say whether a key was written recently."""


def lsn_to_int(text: str) -> int:
    """PostgreSQL's 'X/Y' LSN text as a number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class FreshnessMarkers:
    def __init__(self, url: str, *, ttl_ms: int, timeout_s: float, breaker: CircuitBreaker) -> None:
        self._client = RespClient(url, timeout=timeout_s)
        self._ttl_ms = str(ttl_ms)
        self._breaker = breaker

    async def close(self) -> None:
        await self._client.close()

    async def mark(self, key: str, lsn: int) -> bool:
        """Record that `key` was written at `lsn`; False if Redis could not take it."""
        if not self._breaker.allow():
            return False
        try:
            await self._client.command(
                "EVAL", _SET_IF_HIGHER, "1", KEY_PREFIX + key, f"{lsn:016x}", self._ttl_ms
            )
        except RedisUnavailable as exc:
            self._breaker.record_failure()
            log.warning("freshness marker for %s not stored: %s", key, exc)
            return False
        self._breaker.record_success()
        return True

    async def get(self, key: str) -> int | None:
        """The WAL position the key was last written at, if recently; raise FreshnessUnknown
        when Redis cannot answer."""
        if not self._breaker.allow():
            raise FreshnessUnknown("redis circuit open")
        try:
            raw = await self._client.command("GET", KEY_PREFIX + key)
        except RedisUnavailable as exc:
            self._breaker.record_failure()
            raise FreshnessUnknown(str(exc)) from None
        self._breaker.record_success()
        return None if raw is None else int(raw, 16)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.command("PING") == b"PONG")
        except RedisUnavailable:
            return False

    async def forget(self, key: str) -> None:
        """Drop a key's marker (tests and tools: as if its TTL had run out)."""
        await self._client.command("DEL", KEY_PREFIX + key)
