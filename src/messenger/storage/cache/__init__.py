"""Per-worker read caches and the Redis pub/sub bus that invalidates them across workers."""

from messenger.storage.cache.lru import GenerationalLru

__all__ = ["GenerationalLru"]
