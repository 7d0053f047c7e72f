"""Transactions on shard primaries for background work (the relay, tools): one pool per shard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection
from psycopg_pool import AsyncConnectionPool

from messenger.storage.shards.pools import NETWORK_DEADLINES
from messenger.storage.shards.ring import HashRing
from messenger.storage.shards.transactions import UNNAMED, Key, canonical_key
from messenger.topology import ShardConfig, Topology

STATEMENT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 2
ACQUIRE_TIMEOUT_S = 3
RETIRE_GRACE_S = 5.0
"""How long pools of a shard that left the topology stay open for transactions already on them."""


class PrimaryPools:
    """Pools to every shard's primary (through its PgBouncer), opened by `open()`."""

    def __init__(self, topology: Topology, *, max_size: int = 4) -> None:
        self.topology = topology
        self.ring = HashRing.for_topology(topology)
        self._max_size = max_size
        self._names = {s.index: s.name for s in topology.shards}
        self._pools = {s.index: self._pool(s) for s in topology.shards}
        self._retiring: set[asyncio.Task[None]] = set()
        self._adopting = asyncio.Lock()

    def _pool(self, s: ShardConfig) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            s.rw_dsn,
            min_size=0,
            max_size=self._max_size,
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

    async def adopt(self, topology: Topology) -> bool:
        """Use a newer topology from now on (as `ShardRouter.adopt`); False for the same or an
        older epoch. New pools are opened before the swap; those of shards that left or changed
        close after RETIRE_GRACE_S."""
        async with self._adopting:
            if topology.epoch <= self.topology.epoch:
                return False
            before = {s.index: s for s in self.topology.shards}
            pools = dict(self._pools)
            retired: list[AsyncConnectionPool] = []
            for shard in topology.shards:
                if before.get(shard.index) == shard:
                    continue
                pool = self._pool(shard)
                await pool.open(wait=False)
                if shard.index in pools:
                    retired.append(pools[shard.index])
                pools[shard.index] = pool
            wanted = set(topology.shard_indexes)
            retired += [pools.pop(i) for i in list(pools) if i not in wanted]
            # The swap: nothing below awaits.
            self.topology, self.ring = topology, HashRing.for_topology(topology)
            self._names, self._pools = {s.index: s.name for s in topology.shards}, pools
            if retired:
                task = asyncio.create_task(self._retire(retired), name="retire-primary-pools")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return True

    @staticmethod
    async def _retire(pools: list[AsyncConnectionPool]) -> None:
        try:
            await asyncio.sleep(RETIRE_GRACE_S)
        finally:
            await asyncio.gather(*(p.close(timeout=2.0) for p in pools), return_exceptions=True)

    async def open(self) -> None:
        for pool in self._pools.values():
            await pool.open(wait=False)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
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
