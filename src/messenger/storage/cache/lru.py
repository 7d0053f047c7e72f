"""A bounded LRU whose fills are guarded by per-key generations.

A fill reads `generation(key)` before its database read and inserts with `fill(key, value,
generation)` afterwards; an `invalidate(key)` in between bumps the generation, so the (maybe
stale) result is dropped instead of inserted. `clear()` bumps every generation at once (an
epoch), for when invalidations may have been missed. Entries also expire after `ttl_s`, a
backstop for an invalidation that never arrives.

A write reaches the replicas a little later than the invalidation reaches the caches, so a
fill started just after an invalidation could still read the old row from a lagging replica.
For `hold_s` after a key's invalidation (after a clear: every key's) fills of it insert
nothing; set it to the replica lag beyond which reads go to the primary. One instance per worker, one event loop: no
locks needed (no awaits inside).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# How many invalidated keys keep their bumped generation (beyond that, the epoch is bumped).
_GENERATIONS_KEPT = 65_536


@dataclass(frozen=True, slots=True)
class Generation:
    epoch: int
    key_generation: int


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float


class GenerationalLru(Generic[K, V]):
    def __init__(
        self, max_entries: int, *, ttl_s: float = 30.0, hold_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._ttl_s = ttl_s
        self._hold_s = hold_s
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._generations: OrderedDict[K, tuple[int, float]] = OrderedDict()
        """key -> (invalidations, when the last one was)"""
        self._epoch = 0
        self._all_held_until = 0.0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) on a hit; (False, None) on a miss or an expired entry."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry.expires_at <= self._clock():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, entry.value

    def generation(self, key: K) -> Generation:
        return Generation(self._epoch, self._generations.get(key, (0, 0.0))[0])

    def fill(self, key: K, value: V, seen: Generation) -> bool:
        """Insert unless the key was invalidated (or the cache cleared) since `seen` was read."""
        if seen != self.generation(key):
            return False
        now = self._clock()
        if now < self._all_held_until:
            return False
        last = self._generations.get(key)
        if last is not None and now < last[1] + self._hold_s:
            return False
        self._entries[key] = _Entry(value, now + self._ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.evictions += 1
        return True

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)
        self._generations[key] = (self._generations.pop(key, (0, 0.0))[0] + 1, self._clock())
        if len(self._generations) > _GENERATIONS_KEPT:
            # Forgetting a key's generation could let an old fill match again: bump the epoch.
            self.clear()

    def clear(self) -> None:
        self._entries.clear()
        self._generations.clear()
        self._epoch += 1
        self._all_held_until = self._clock() + self._hold_s
