"""Database and Redis round trips, counted where they arrive, not estimated.

Database: every PgBouncer's `SHOW STATS` `total_query_count` (one per query the bouncer
forwarded and saw answered: a simple-protocol text of several statements is one round trip
from the client's side and counts as one per ReadyForQuery); the admin console's own commands
are not counted. Redis: `INFO stats` `total_commands_processed` (EVAL is one command; the INFO
itself adds one per snapshot). Both include background work in the phase (the replica monitor,
the relay), which is why a per-request figure is taken over thousands of requests.

The same counters serve the API and the bare yardstick, so their figures compare.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import psycopg

from messenger.storage.redis.resp import RedisUnavailable, RespClient
from messenger.topology import Topology


@dataclass(frozen=True, slots=True)
class RoundTrips:
    database: int
    redis: int

    def __sub__(self, other: RoundTrips) -> RoundTrips:
        return RoundTrips(self.database - other.database, self.redis - other.redis)


def _admin_dsn(dsn: str) -> str:
    """The shard's PgBouncer DSN pointed at its admin console (the `pgbouncer` database)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = "pgbouncer"
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def database_queries(topology: Topology) -> int:
    total = 0
    for shard in topology.shards:
        with psycopg.connect(_admin_dsn(shard.rw_dsn), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute("SHOW STATS", prepare=False)
            names = [c.name for c in cursor.description or ()]
            column = names.index("total_query_count")
            total += sum(int(row[column]) for row in cursor.fetchall() if row[0] != "pgbouncer")
    return total


async def _redis_commands(url: str) -> int:
    client = RespClient(url, timeout=5.0)
    try:
        raw = await client.command("INFO", "stats")
    finally:
        await client.close()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    for line in text.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":", 1)[1])
    return 0


def redis_commands(url: str) -> int:
    with contextlib.suppress(RedisUnavailable):
        return asyncio.run(_redis_commands(url))
    return 0


def snapshot(topology: Topology) -> RoundTrips:
    return RoundTrips(database_queries(topology), redis_commands(topology.redis_url))
