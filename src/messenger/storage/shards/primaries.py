"""Transactions on shard primaries for background work (the relay, tools): one pool per shard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection
from psycopg_pool import AsyncConnectionPool

from messenger.storage.shards.pools import NETWORK_DEADLINES
from messenger.storage.shards.ring import HashRing
from messenger.storage.shards.transactions import UNNAMED, Key, canonical_key
from messenger.topology import Topology

STATEMENT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 2
ACQUIRE_TIMEOUT_S = 3


class PrimaryPools:
    """Pools to every shard's primary (through its PgBouncer), opened by `open()`."""

    def __init__(self, topology: Topology, *, max_size: int = 4) -> None:
        self.topology = topology
        self.ring = HashRing.for_topology(topology)
        self._names = {s.index: s.name for s in topology.shards}
        self._pools = {
            s.index: AsyncConnectionPool(
                s.rw_dsn,
                min_size=0,
                max_size=max_size,
                timeout=ACQUIRE_TIMEOUT_S,
                open=False,
                # The same client-side binding as the API's pools (storage/shards/pools.py): handlers
                # send several statements in one round trip, which server-side binding refuses.
                kwargs={
                    "prepare_threshold": None,
                    "connect_timeout": CONNECT_TIMEOUT_S,
                    "cursor_factory": AsyncClientCursor,
                    **NETWORK_DEADLINES,
                },
                name=f"{s.name}-primary",
            )
            for s in topology.shards
        }

    async def open(self) -> None:
        for pool in self._pools.values():
            await pool.open(wait=False)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()

    async def __aenter__(self) -> PrimaryPools:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def shard_indexes(self) -> tuple[int, ...]:
        return self.topology.shard_indexes

    def shard_name(self, shard: int) -> str:
        return self._names[shard]

    def shard_for(self, key: Key) -> int:
        return self.ring.shard_for(canonical_key(key))

    def transaction_for(
        self, key: Key, *, name: str, marks: Sequence[Key] = ()
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """See ShardTransactions."""
        return self.transaction(self.shard_for(key), name=name, marks=marks)

    @asynccontextmanager
    async def transaction(
        self, shard: int, *, name: str = UNNAMED, marks: Sequence[Key] = ()
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """See ShardTransactions; `marks` is ignored: these tools read primaries only, and
        `name` too: these pools keep no metrics (the relay and tools report on their own)."""
        async with self._pools[shard].connection() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            yield conn
