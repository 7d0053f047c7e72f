"""A per-worker read cache over GenerationalLru, kept right by the invalidation bus.

What every read cache here shares (docs/performance.md, "Read cache"):
- a fill reads the key's generation before the database read and inserts only if no
  invalidation of that key (and no clear) happened meanwhile;
- entries are filled and served only while the invalidation subscriber is connected; losing
  or (re)gaining the subscription clears everything;
- a write drops the key here before its response and publishes it for the other workers;
- for `hold_s` after an invalidation (or a clear) the key is not filled: a lagging replica
  may still answer with the old row (GenerationalLru);
- entries expire after `ttl_s` whatever happens.

A cache is named (`users`, `members`): the `cache` label of the cache_* metrics, and the Redis
channel its invalidations travel on.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from messenger.metrics import Metrics
from messenger.storage.cache.bus import EVERY_KEY, InvalidationBus
from messenger.storage.cache.lru import Generation, GenerationalLru

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeyedCache(Generic[K, V]):
    def __init__(
        self, name: str, max_entries: int, *, key_text: Callable[[K], str],
        parse_key: Callable[[str], K], ttl_s: float = 30.0, hold_s: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self._lru: GenerationalLru[K, V] = GenerationalLru(max_entries, ttl_s=ttl_s, hold_s=hold_s)
        self._key_text = key_text
        self._parse_key = parse_key
        self._metrics = metrics
        self._connected = False
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self._bus: InvalidationBus | None = None

    def publish_through(self, bus: InvalidationBus) -> None:
        """Where `written` tells the other workers (without one, only this worker drops it)."""
        self._bus = bus

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def usable(self) -> bool:
        return self._connected

    def set_connected(self, connected: bool) -> None:
        if connected != self._connected or connected:
            self._lru.clear()
        self._connected = connected

    def get(self, key: K) -> tuple[bool, V | None]:
        if not self._connected:
            return False, None
        hit, value = self._lru.get(key)
        if hit:
            self.hits += 1
            if self._metrics is not None:
                self._metrics.child(self._metrics.cache_hits, self.name).inc()
        else:
            self.misses += 1
            if self._metrics is not None:
                self._metrics.child(self._metrics.cache_misses, self.name).inc()
        return hit, value

    def generation(self, key: K) -> Generation:
        return self._lru.generation(key)

    def fill(self, key: K, value: V, seen: Generation) -> None:
        if not self._connected:
            return
        before = self._lru.evictions
        self._lru.fill(key, value, seen)
        if self._metrics is not None and self._lru.evictions > before:
            self._metrics.child(self._metrics.cache_evictions, self.name).inc(self._lru.evictions - before)

    def invalidate(self, key: K) -> None:
        self._lru.invalidate(key)
        self.invalidations += 1
        if self._metrics is not None:
            self._metrics.child(self._metrics.cache_invalidations, self.name).inc()

    async def written(self, key: K) -> None:
        """A write of the key committed (or may have): drop it here at once, then tell everyone else."""
        self.invalidate(key)
        if self._bus is not None:
            await self._bus.publish(self.name, self._key_text(key))

    def invalidate_text(self, text: str) -> None:
        """An invalidation from the bus (the key as published, or EVERY_KEY)."""
        if text == EVERY_KEY:
            self.clear()
            return
        try:
            key = self._parse_key(text)
        except ValueError:
            return
        self.invalidate(key)

    def clear(self) -> None:
        self._lru.clear()
