"""The read cache of user rows by id, per worker.

Invariants (docs/performance.md, "Read cache"):
- a fill reads the key's generation before the database read and inserts only if no
  invalidation of that key (and no clear) happened meanwhile;
- entries are filled and served only while the invalidation subscriber is connected; losing
  or (re)gaining the subscription clears everything;
- a write drops the key here before its response and publishes it for the other workers;
- a read with a consistency token, or of a key with a freshness marker, bypasses the cache;
- for `hold_s` after an invalidation (or a clear) the key is not filled: a lagging replica
  may still answer with the old row (GenerationalLru);
- entries expire after `ttl_s` whatever happens; misses (no such user) are never cached.
"""

from __future__ import annotations

import uuid

from messenger.domain.users import User
from messenger.metrics import Metrics
from messenger.storage.cache.bus import EVERY_KEY, InvalidationBus
from messenger.storage.cache.lru import Generation, GenerationalLru

CACHE_NAME = "users"


class UserCache:
    def __init__(
        self, max_entries: int, *, ttl_s: float = 30.0, hold_s: float = 0.0, metrics: Metrics | None = None
    ) -> None:
        self._lru: GenerationalLru[uuid.UUID, User] = GenerationalLru(max_entries, ttl_s=ttl_s, hold_s=hold_s)
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

    def get(self, user_id: uuid.UUID) -> tuple[bool, User | None]:
        if not self._connected:
            return False, None
        hit, value = self._lru.get(user_id)
        if hit:
            self.hits += 1
            if self._metrics is not None:
                self._metrics.child(self._metrics.cache_hits, CACHE_NAME).inc()
        else:
            self.misses += 1
            if self._metrics is not None:
                self._metrics.child(self._metrics.cache_misses, CACHE_NAME).inc()
        return hit, value

    def generation(self, user_id: uuid.UUID) -> Generation:
        return self._lru.generation(user_id)

    def fill(self, user_id: uuid.UUID, value: User, seen: Generation) -> None:
        if not self._connected:
            return
        before = self._lru.evictions
        self._lru.fill(user_id, value, seen)
        if self._metrics is not None and self._lru.evictions > before:
            self._metrics.child(self._metrics.cache_evictions, CACHE_NAME).inc(self._lru.evictions - before)

    def invalidate(self, user_id: uuid.UUID) -> None:
        self._lru.invalidate(user_id)
        self.invalidations += 1
        if self._metrics is not None:
            self._metrics.child(self._metrics.cache_invalidations, CACHE_NAME).inc()

    async def written(self, user_id: uuid.UUID) -> None:
        """A write of the user committed: drop it here at once, then tell everyone else."""
        self.invalidate(user_id)
        if self._bus is not None:
            await self._bus.publish(str(user_id))

    def invalidate_text(self, key: str) -> None:
        """An invalidation from the bus (the key as published, or EVERY_KEY)."""
        if key == EVERY_KEY:
            self.clear()
            return
        try:
            user_id = uuid.UUID(key)
        except ValueError:
            return
        self.invalidate(user_id)

    def clear(self) -> None:
        self._lru.clear()
