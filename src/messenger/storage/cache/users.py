"""The read cache of user rows by id, per worker (the rules: cache/keyed.py).

Misses (no such user) are never cached; a read with a consistency token, or of a key with a
freshness marker, bypasses the cache (UserStore.get).
"""

from __future__ import annotations

import uuid

from messenger.domain.users import User
from messenger.metrics import Metrics
from messenger.storage.cache.keyed import KeyedCache

CACHE_NAME = "users"


class UserCache(KeyedCache[uuid.UUID, User]):
    def __init__(
        self, max_entries: int, *, ttl_s: float = 30.0, hold_s: float = 0.0, metrics: Metrics | None = None
    ) -> None:
        super().__init__(
            CACHE_NAME, max_entries, key_text=str, parse_key=uuid.UUID, ttl_s=ttl_s, hold_s=hold_s,
            metrics=metrics,
        )
