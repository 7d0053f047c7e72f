"""Read-your-writes markers: after a write commits, the primary's WAL position is stored in
Redis under the written key for a few seconds. Any worker process serving a read of that key
then knows how far the shard's replica must have replayed before it may answer.

Redis being down must never produce a stale read, so a marker that cannot be read is reported
as unknown and the caller reads from the primary. Nor may a marker that could not be *stored*
(one slow call, the breaker open) be skipped silently: the key goes into this worker's
"unmarked writes" for the marker's TTL, so this worker's reads of it go to the primary, and a
background task stores it as soon as Redis answers again (set-if-higher makes a late store
harmless), so other workers see it too. Failures are counted in
freshness_mark_failures_total. Past `MAX_UNMARKED` keys (a long Redis outage under load), the
worker stops remembering keys and reads every key from the primary until the TTL has passed.

Reads do not ask Redis while the worker's feed (freshness_feed.py) is complete: the script that
stores a marker publishes it too, and a store is followed by one more round trip (the barrier)
before the write answers, so every worker's feed holds the marker by the time anyone can ask.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from messenger.metrics import Metrics
from messenger.storage.redis.resp import RedisUnavailable, RespClient
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.freshness_feed import FEED_CHANNEL, FreshnessFeed, feed_message

log = logging.getLogger(__name__)

KEY_PREFIX = "ryw:"
MAX_UNMARKED = 10_000
RETRY_INTERVAL_S = 0.2

# Keep the highest position: two writes of one key racing from two workers must not let the
# older position overwrite the newer one. Positions are fixed-width hex, so they compare as text.
# Every store is published for the workers' feeds (ARGV[3] the channel, ARGV[4] the message).
_SET_IF_HIGHER = """
local current = redis.call('GET', KEYS[1])
if (not current) or current < ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
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
    def __init__(
        self, url: str, *, ttl_ms: int, timeout_s: float, breaker: CircuitBreaker,
        metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic,
        feed: FreshnessFeed | None = None,
    ) -> None:
        self._client = RespClient(url, timeout=timeout_s)
        self._feed = feed
        self._ttl_ms = str(ttl_ms)
        self._ttl_s = ttl_ms / 1000
        self._breaker = breaker
        self._metrics = metrics
        self._clock = clock
        self._unmarked: dict[str, tuple[int, float]] = {}
        """key -> (position, until when): writes whose marker Redis did not take."""
        self._all_unknown_until = 0.0
        self._retrying: asyncio.Task[None] | None = None
        self.mark_failures = 0

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
        await self._client.close()

    async def mark(self, key: str, lsn: int) -> bool:
        """Record that `key` was written at `lsn`; False if Redis could not take it now (the
        key is then read from the primary here until the marker is stored or its TTL passed)."""
        if await self._store(key, lsn):
            return True
        self._remember(key, lsn)
        return False

    async def _store(self, key: str, lsn: int) -> bool:
        if not self._breaker.allow():
            return False
        position = f"{lsn:016x}"
        try:
            await self._client.command(
                "EVAL", _SET_IF_HIGHER, "1", KEY_PREFIX + key, position, self._ttl_ms,
                FEED_CHANNEL, feed_message(key, lsn),
            )
            # The barrier: Redis reads this only after it has written the publication to every
            # feed's socket (freshness_feed.py, "In time"), and the write answers after it.
            await self._client.command("PING")
        except RedisUnavailable as exc:
            self._breaker.record_failure()
            log.warning("freshness marker for %s not stored: %s", key, exc)
            return False
        self._breaker.record_success()
        return True

    def _remember(self, key: str, lsn: int) -> None:
        self.mark_failures += 1
        if self._metrics is not None:
            self._metrics.freshness_mark_failures.inc()
        now = self._clock()
        if len(self._unmarked) >= MAX_UNMARKED:
            self._unmarked.clear()
            self._all_unknown_until = now + self._ttl_s
            return
        previous = self._unmarked.get(key)
        self._unmarked[key] = (max(lsn, previous[0]) if previous else lsn, now + self._ttl_s)
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._retry_until_stored())

    async def _retry_until_stored(self) -> None:
        while self._unmarked:
            await asyncio.sleep(RETRY_INTERVAL_S)
            await self.retry_unmarked()

    async def retry_unmarked(self) -> None:
        """Store the markers Redis did not take (and forget those whose TTL has passed)."""
        for key, (lsn, until) in list(self._unmarked.items()):
            if self._clock() >= until:
                self._unmarked.pop(key, None)
            elif await self._store(key, lsn):
                if self._unmarked.get(key, (None,))[0] == lsn:
                    del self._unmarked[key]
            else:
                return  # Redis is still away: try again later

    def _unknown_here(self, key: str) -> bool:
        now = self._clock()
        if now < self._all_unknown_until:
            return True
        entry = self._unmarked.get(key)
        if entry is None:
            return False
        if now >= entry[1]:
            del self._unmarked[key]
            return False
        return True

    async def get(self, key: str) -> int | None:
        """The WAL position the key was last written at, if recently; raise FreshnessUnknown
        when Redis cannot answer, or when this worker wrote the key and could not mark it."""
        if self._unknown_here(key):
            raise FreshnessUnknown("a recent write of this key is not marked")
        if self._feed is not None:
            known, position = self._feed.lookup(key)
            if known:
                return position
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

