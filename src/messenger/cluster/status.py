"""What `messenger cluster status` reports: every server, up or down, lag, size, schema version,
and each primary's largest tables (what grows without bound shows there first).

Table sizes come from the catalog only (pg_total_relation_size, pg_class.reltuples as the row
estimate: no count(*) scan), under a statement deadline, so status stays fast on a big shard; a
shard whose sizes cannot be read in time still shows as up, with the reason in its detail."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import psycopg

from messenger.cluster.daemon import accepts_tcp
from messenger.cluster.local import LocalCluster

CONNECT_TIMEOUT_S = 2
SIZES_DEADLINE_MS = 2000
LARGEST_TABLES = 5


@dataclass(frozen=True, slots=True)
class TableSize:
    table: str
    total_bytes: int
    """Table, indexes and TOAST; a partitioned table's partitions added up."""
    rows_estimate: int | None
    """pg_class.reltuples (as of the last ANALYZE or VACUUM); None before the first."""


@dataclass(frozen=True, slots=True)
class ServerStatus:
    shard: str
    role: str
    port: int
    up: bool
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    size_bytes: int | None = None
    migration: str | None = None
    largest_tables: tuple[TableSize, ...] = ()
    """Primaries only: the biggest first."""
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_PRIMARY_SQL = """
SELECT pg_database_size(current_database()),
       (SELECT version_num FROM alembic_version LIMIT 1)
"""
_PRIMARY_SQL_NO_VERSION = "SELECT pg_database_size(current_database()), NULL"
_REPLICATION_SQL = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
       COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8
FROM pg_stat_replication WHERE application_name = %s
"""
# Partitions are added up under their root (users is partitioned: its parent alone is 0 bytes).
# reltuples is -1 for a table never analyzed, and per partition for a partitioned one.
_TABLE_SIZES_SQL = """
SELECT root.relname, sum(pg_total_relation_size(c.oid))::bigint,
       CASE WHEN bool_or(c.reltuples < 0) THEN NULL ELSE sum(c.reltuples)::bigint END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class root ON root.oid = COALESCE(pg_partition_root(c.oid), c.oid)
WHERE n.nspname = 'public' AND c.relkind = 'r'
GROUP BY root.relname
ORDER BY 2 DESC, 1
LIMIT %s
"""


def table_sizes(dsn: str, limit: int = LARGEST_TABLES) -> tuple[TableSize, ...]:
    """The `limit` largest tables of one database, from the catalog, within SIZES_DEADLINE_MS."""
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                         options=f"-c statement_timeout={SIZES_DEADLINE_MS}") as conn:
        rows = conn.execute(_TABLE_SIZES_SQL, (limit,)).fetchall()
    return tuple(TableSize(str(name), int(size), None if rows_ is None else int(rows_))
                 for name, size, rows_ in rows)


def _query_postgres(dsn: str, sql: str, fallback_sql: str) -> tuple[object, ...]:
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
        try:
            row = conn.execute(sql).fetchone()
        except psycopg.errors.UndefinedTable:
            row = conn.execute(fallback_sql).fetchone()
        assert row is not None
        return tuple(row)


def _postgres_status(cluster: LocalCluster, shard: int, role: str) -> ServerStatus:
    server = cluster.postgres(shard, role)
    name = f"shard_{shard}"
    dsn = server.dsn(cluster.state.password)
    try:
        size, version = _query_postgres(dsn, _PRIMARY_SQL, _PRIMARY_SQL_NO_VERSION)
    except psycopg.Error as exc:
        return ServerStatus(name, role, server.port, up=False, detail=_first_line(exc))
    lag_bytes = lag_seconds = None
    detail = ""
    largest: tuple[TableSize, ...] = ()
    if role == "primary":
        try:
            largest = table_sizes(dsn)
        except psycopg.Error as exc:
            detail = f"table sizes unavailable: {_first_line(exc)}"
    if role == "replica":
        primary = cluster.postgres(shard, "primary")
        try:
            with psycopg.connect(primary.dsn(cluster.state.password), connect_timeout=CONNECT_TIMEOUT_S) as conn:
                row = conn.execute(_REPLICATION_SQL, (server.name,)).fetchone()
            if row is None:
                detail = "not streaming from its primary"
            else:
                lag_bytes = int(row[0] or 0)
                # replay_lag keeps its last sample for a while after the replica caught up.
                lag_seconds = float(row[1] or 0) if lag_bytes else 0.0
        except psycopg.Error:
            detail = "primary unreachable: lag unknown"
    return ServerStatus(
        name, role, server.port, up=True, lag_bytes=lag_bytes, lag_seconds=lag_seconds,
        size_bytes=int(size), migration=str(version) if version else None,  # type: ignore[call-overload]
        largest_tables=largest, detail=detail,
    )


def _tcp_status(shard: str, role: str, port: int) -> ServerStatus:
    return ServerStatus(shard, role, port, up=accepts_tcp(port))


def cluster_status(cluster: LocalCluster) -> list[ServerStatus]:
    """One row per server, shards in order (primary, replica, pgbouncer), Redis last."""
    jobs = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for shard in range(cluster.state.shards):
            for role in ("primary", "replica"):
                jobs.append(pool.submit(_postgres_status, cluster, shard, role))
            jobs.append(pool.submit(
                _tcp_status, f"shard_{shard}", "pgbouncer", cluster.layout.port(shard, "pgbouncer")
            ))
        jobs.append(pool.submit(_tcp_status, "-", "redis", cluster.layout.redis_port))
        return [job.result() for job in jobs]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
