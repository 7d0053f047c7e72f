"""What the operator's page reads from the shards: rows, relay backlog, server connections,
and whether each server (primary, replica, PgBouncer) accepts connections at all.

Every reading is best effort: a server that does not answer gives None, never an error, so
one dead shard cannot blank the page. Reads go where the router sends them (replicas first);
`client_connections` asks one server regardless of its breaker, as health checks do.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict

from messenger.domain.errors import ShardBusy, ShardUnavailable
from messenger.storage.relay.runner import read_backlog
from messenger.storage.shards.pools import Role
from messenger.storage.shards.router import ShardRouter
from messenger.storage.users import UserStore

COUNT_CLIENT_BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
LISTEN_TIMEOUT_S = 0.5
"""A server that has not accepted a TCP connection in this long counts as down."""


@dataclass(frozen=True, slots=True)
class RelayBacklog:
    pending: int
    oldest_age_s: float
    dead_letters: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


def endpoint(dsn: str) -> Endpoint:
    """Host and port of a libpq connection string or URL (defaults as libpq has them)."""
    parts = conninfo_to_dict(dsn)
    host = str(parts.get("host") or "127.0.0.1").split(",")[0]
    return Endpoint(host, int(str(parts.get("port") or "5432").split(",")[0]))


async def listening(where: Endpoint, timeout_s: float = LISTEN_TIMEOUT_S) -> bool:
    """True if the server accepts a TCP connection now (its process is up and listening)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(where.host, where.port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    return True


class ClusterReadings:
    def __init__(self, router: ShardRouter) -> None:
        self.router = router
        self._users = UserStore(router)

    async def users(self, shard: int) -> int | None:
        try:
            return await self._users.count_on_shard(shard)
        except (ShardUnavailable, ShardBusy):
            return None

    async def relay_backlog(self, shard: int) -> RelayBacklog | None:
        try:
            backlog = await read_backlog(self.router, shard)
        except (ShardUnavailable, ShardBusy):
            return None
        return RelayBacklog(backlog.pending, backlog.oldest_age_s, backlog.dead)

    async def client_connections(self, shard: int, role: Role) -> int | None:
        """Client backends on the server (PgBouncer's server connections and direct ones)."""
        try:
            rows = await self.router.probe(shard, role, COUNT_CLIENT_BACKENDS, name="count_client_backends")
        except (ShardUnavailable, ShardBusy):
            return None
        return int(rows[0][0])
