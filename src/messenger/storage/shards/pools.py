"""Connection pools: per shard, one to its primary (rw) and one to its replica (ro), both
through the shard's PgBouncer in transaction mode.

PgBouncer 1.18 cannot keep prepared statements in transaction mode, so nothing is prepared
(`prepare_threshold=None`). Queries use client-side parameter binding (simple query protocol):
that lets one round trip carry `SET LOCAL statement_timeout`, the statement and, for writes,
the commit and the WAL position after it (see statements.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from psycopg import AsyncClientCursor, AsyncConnection
from psycopg_pool import AsyncConnectionPool

from messenger.topology import ShardConfig

Role = Literal["primary", "replica"]
ROLES: tuple[Role, Role] = ("primary", "replica")
CONNECT_TIMEOUT_S = 2
"""libpq's connect_timeout (whole seconds, 2 at least); calls are bounded tighter by the router."""


NETWORK_DEADLINES: dict[str, int] = {
    "keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 3,
    "tcp_user_timeout": 5000,
}
"""libpq socket options: on a partition (packets dropped, no RST) a connection fails after
~5 s of unacknowledged data or silent keepalives instead of TCP's minutes-to-hours."""


@dataclass(frozen=True, slots=True)
class PoolSizing:
    min_size: int
    max_size: int
    acquire_timeout: float


class ShardPools:
    """The pools of one worker process. Built from the topology, opened by the app's lifespan."""

    def __init__(self, shards: tuple[ShardConfig, ...], sizing: PoolSizing, *, app_name: str) -> None:
        self._sizing = sizing
        self._app_name = app_name
        self._pools: dict[tuple[int, Role], AsyncConnectionPool] = {}
        for shard in shards:
            self.add(shard)

    def add(self, shard: ShardConfig) -> list[AsyncConnectionPool]:
        """Make (not open) the shard's two pools; the pools they replace, if the shard was
        there with other servers (the caller closes those once their calls are over)."""
        sizing = self._sizing
        replaced = self.remove(shard.index)
        endpoints: tuple[tuple[Role, str], ...] = (("primary", shard.rw_dsn), ("replica", shard.ro_dsn))
        for role, dsn in endpoints:
            self._pools[(shard.index, role)] = AsyncConnectionPool(
                dsn,
                min_size=sizing.min_size,
                max_size=sizing.max_size,
                timeout=sizing.acquire_timeout,
                open=False,
                name=f"{shard.name}-{role}",
                kwargs={
                    "autocommit": True,
                    "prepare_threshold": None,
                    "cursor_factory": AsyncClientCursor,
                    "connect_timeout": CONNECT_TIMEOUT_S,
                    "application_name": self._app_name,
                    **NETWORK_DEADLINES,
                },
                connection_class=AsyncConnection,
                reconnect_timeout=3600.0,
            )
        return replaced

    def remove(self, shard: int) -> list[AsyncConnectionPool]:
        """Forget the shard's pools and hand them over (the caller closes them)."""
        return [pool for role in ROLES if (pool := self._pools.pop((shard, role), None)) is not None]

    async def open_shard(self, shard: int) -> None:
        """Start one shard's pools without waiting for connections (see `open`)."""
        await asyncio.gather(*(self._pools[(shard, role)].open(wait=False) for role in ROLES))

    async def open(self) -> None:
        """Start every pool without waiting for connections: a shard that is down at start-up
        is reported by /ready and recovers on its own, it does not stop the server."""
        await asyncio.gather(*(pool.open(wait=False) for pool in self._pools.values()))

    async def close(self) -> None:
        await asyncio.gather(*(pool.close(timeout=2.0) for pool in self._pools.values()))

    def get(self, shard: int, role: Role) -> AsyncConnectionPool:
        return self._pools[(shard, role)]

    def stats(self, shard: int, role: Role) -> dict[str, int]:
        """In-use and idle connections of this worker's pool."""
        return pool_stats(self._pools[(shard, role)])


def pool_stats(pool: AsyncConnectionPool) -> dict[str, int]:
    """In-use, idle and waiting connections of one pool."""
    raw = pool.get_stats()
    size, idle = raw.get("pool_size", 0), raw.get("pool_available", 0)
    return {"in_use": size - idle, "idle": idle, "waiting": raw.get("requests_waiting", 0)}
