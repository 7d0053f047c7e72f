"""What background work and multi-statement use cases need of the storage layer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from psycopg import AsyncConnection

Key = uuid.UUID | str
"""A placement key: a UUID, or canonical key text (lowercase UUID text, a lowercase claim value)."""

UNNAMED = "unnamed"
"""The name of a shard-first call that gives none (callers not named yet): still one bounded label."""


def canonical_key(key: Key) -> str:
    """The text the ring hashes and freshness markers are stored under (`str(uuid)` is lowercase)."""
    return key if isinstance(key, str) else str(key)


class ShardTransactions(Protocol):
    """Transactions on shard primaries, and where keys live: what the relay, its handlers and
    multi-statement use cases (registration, deletion) need of the storage layer."""

    @property
    def shard_indexes(self) -> tuple[int, ...]: ...

    def shard_name(self, shard: int) -> str: ...

    def shard_for(self, key: Key) -> int: ...

    def transaction_for(
        self, key: Key, *, name: str, marks: Sequence[Key] = ()
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """`transaction` on the shard that holds `key`."""
        ...

    def transaction(
        self, shard: int, *, name: str = UNNAMED, marks: Sequence[Key] = ()
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A transaction on the shard's primary, with a statement timeout; commits on exit.

        `name` says which transaction it is in metrics and logs. `marks`: keys the transaction
        writes, so that reads of them right after see the write (read-your-writes); an
        implementation without replicas may ignore them.
        """
        ...
