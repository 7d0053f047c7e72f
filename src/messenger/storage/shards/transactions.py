"""What background work and multi-statement use cases need of the storage layer."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from psycopg import AsyncConnection


class ShardTransactions(Protocol):
    """Transactions on shard primaries, and where keys live: what the relay, its handlers and
    multi-statement use cases (registration, deletion) need of the storage layer."""

    @property
    def shard_indexes(self) -> tuple[int, ...]: ...

    def shard_name(self, shard: int) -> str: ...

    def shard_for(self, key: str) -> int: ...

    def transaction(
        self, shard: int, *, marks: Sequence[str] = ()
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A transaction on the shard's primary, with a statement timeout; commits on exit.

        `marks`: keys the transaction writes, so that reads of them right after see the write
        (read-your-writes); an implementation without replicas may ignore them.
        """
        ...
