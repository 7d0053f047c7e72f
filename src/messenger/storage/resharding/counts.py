"""How many rows of each sharded table a plan moves, counted on the sources by `ring_pos`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import psycopg
from psycopg import sql

from messenger.storage.migrator import head_revision
from messenger.storage.resharding.plan import ReshardPlan, Route
from messenger.storage.sharded_tables import (
    RING_POS_TABLES_SQL,
    SHARDED_TABLES,
    missing_from_registry,
)
from messenger.storage.shards.ring import HashRing
from messenger.topology import ShardConfig, Topology

CONNECT_TIMEOUT_S = 5
COUNT_TIMEOUT_MS = 120_000
"""Counting a large table's moving ranges reads their index; two minutes bounds a sick shard."""

MOVING_ROWS_SQL = """
SELECT coalesce(sum(part.n), 0)::bigint, (SELECT count(*) FROM {table})
FROM unnest(%(lo)s::bigint[], %(hi)s::bigint[]) AS r(lo, hi),
     LATERAL (SELECT count(*) AS n FROM {table} t WHERE t.ring_pos >= r.lo AND t.ring_pos < r.hi) AS part
"""
"""Rows of one table in a route's ranges (one index range scan per range), and all its rows."""

ROUTE_ROWS_SQL = """
SELECT coalesce(sum(part.n), 0)::bigint
FROM unnest(%(lo)s::bigint[], %(hi)s::bigint[]) AS r(lo, hi),
     LATERAL (SELECT count(*) AS n FROM {table} t WHERE t.ring_pos >= r.lo AND t.ring_pos < r.hi) AS part
"""


class ShardsNotReady(Exception):
    """A shard cannot take part: unreachable, at another schema version, or a table unregistered."""


@dataclass(frozen=True, slots=True)
class TableCount:
    table: str
    source: int
    target: int
    moving: int
    total: int
    """All the table's rows on the source, for the moving share."""


@dataclass(slots=True)
class MovingRows:
    counts: list[TableCount] = field(default_factory=list)

    def by_table(self) -> dict[str, tuple[int, int]]:
        """Per table: rows moving, rows in the cluster's sources."""
        totals: dict[str, tuple[int, int]] = {}
        seen: set[tuple[str, int]] = set()
        for c in self.counts:
            moving, total = totals.get(c.table, (0, 0))
            if (c.table, c.source) not in seen:
                seen.add((c.table, c.source))
                total += c.total
            totals[c.table] = (moving + c.moving, total)
        return totals


class ShardUnreachable(psycopg.OperationalError):
    """A shard's primary does not answer: the message names the shard."""


def connect(shard: ShardConfig, *, statement_timeout_ms: int) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit admin connection straight to the shard's primary, with a deadline."""
    try:
        return psycopg.connect(
            shard.primary_dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c statement_timeout={statement_timeout_ms}",
        )
    except psycopg.OperationalError as exc:
        raise ShardUnreachable(f"{shard.name} is unreachable: {first_line(exc)}") from exc


Admin: TypeAlias = ShardConfig | psycopg.Connection[tuple[Any, ...]]
"""Where an admin call runs: a shard (a connection of its own, closed after) or an open
connection (the switch keeps one per route and side, so the held writes wait for no connects)."""


@contextmanager
def session(on: Admin, *, statement_timeout_ms: int) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    if isinstance(on, ShardConfig):
        with connect(on, statement_timeout_ms=statement_timeout_ms) as conn:
            yield conn
    else:
        yield on


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_shards(shards: tuple[ShardConfig, ...]) -> None:
    """Refuse unless every shard answers, is at the schema head and registers every table."""
    head = head_revision()
    problems = []
    for shard in shards:
        try:
            with connect(shard, statement_timeout_ms=5_000) as conn:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                tables = [r[0] for r in conn.execute(RING_POS_TABLES_SQL)]
        except psycopg.errors.UndefinedTable:
            problems.append(f"{shard.name} has no schema (run `messenger migrate up`)")
            continue
        except ShardUnreachable as exc:
            problems.append(str(exc))
            continue
        except psycopg.Error as exc:
            problems.append(f"{shard.name}: {first_line(exc)}")
            continue
        revision = row[0] if row else None
        if revision != head:
            problems.append(f"{shard.name} is at schema {revision or 'none'}, not head {head} "
                            "(run `messenger migrate up` first)")
        if missing := missing_from_registry(tables):
            problems.append(f"{shard.name} has sharded tables the resharding registry does not "
                            f"list: {', '.join(missing)} (add them to storage/sharded_tables.py)")
    if problems:
        raise ShardsNotReady("; ".join(problems))


def count_moving_rows(
    plan: ReshardPlan, *, progress: Callable[[TableCount], None] = lambda _: None
) -> MovingRows:
    """Per route and table, the rows that move; sources are counted in parallel."""

    def count_route(route: Route) -> list[TableCount]:
        lo = [r[0] for r in route.ranges]
        hi = [r[1] for r in route.ranges]
        found = []
        with connect(plan.old.shard(route.source), statement_timeout_ms=COUNT_TIMEOUT_MS) as conn:
            for table in SHARDED_TABLES:
                query = sql.SQL(MOVING_ROWS_SQL).format(table=sql.Identifier(table.name))
                row = conn.execute(query, {"lo": lo, "hi": hi}).fetchone()
                assert row is not None
                count = TableCount(table.name, route.source, route.target, int(row[0]), int(row[1]))
                progress(count)
                found.append(count)
        return found

    result = MovingRows()
    with ThreadPoolExecutor(max_workers=max(1, len(plan.routes))) as pool:
        for counts in pool.map(count_route, plan.routes):
            result.counts.extend(counts)
    return result


def route_counts(shard: Admin, route: Route, *, timeout_ms: int = COUNT_TIMEOUT_MS) -> dict[str, int]:
    """Per table, the rows `shard` holds in the route's ranges."""
    params = {"lo": [r[0] for r in route.ranges], "hi": [r[1] for r in route.ranges]}
    with session(shard, statement_timeout_ms=timeout_ms) as conn:
        return {
            t.name: int(conn.execute(sql.SQL(ROUTE_ROWS_SQL).format(table=sql.Identifier(t.name)), params).fetchone()[0])  # type: ignore[index]
            for t in SHARDED_TABLES
        }


def shard_rows(shards: tuple[ShardConfig, ...]) -> dict[str, dict[str, int]]:
    """Per shard and table, every row it holds: the distribution a reshard changes."""

    def count(shard: ShardConfig) -> dict[str, int]:
        with connect(shard, statement_timeout_ms=COUNT_TIMEOUT_MS) as conn:
            return {
                t.name: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.name))).fetchone()[0])  # type: ignore[index]
                for t in SHARDED_TABLES
            }

    with ThreadPoolExecutor(max_workers=max(1, len(shards))) as pool:
        return dict(zip((s.name for s in shards), pool.map(count, shards), strict=True))


def misplaced_rows(topology: Topology) -> dict[str, dict[str, int]]:
    """Per shard and table, the rows whose `ring_pos` the topology's ring gives to another
    shard: all zero after a reshard. A key has one owner, so zero here also means no row is on
    two shards."""
    ring = HashRing.for_topology(topology)

    def count(shard: ShardConfig) -> dict[str, int]:
        owned = ring.ranges_for(shard.index)
        params = {"lo": [lo for lo, _ in owned], "hi": [hi for _, hi in owned]}
        with connect(shard, statement_timeout_ms=COUNT_TIMEOUT_MS) as conn:
            out = {}
            for t in SHARDED_TABLES:
                table = sql.Identifier(t.name)
                inside = conn.execute(sql.SQL(ROUTE_ROWS_SQL).format(table=table), params).fetchone()
                total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
                out[t.name] = int(total[0]) - int(inside[0])  # type: ignore[index]
            return out

    with ThreadPoolExecutor(max_workers=max(1, len(topology.shards))) as pool:
        return dict(zip((s.name for s in topology.shards), pool.map(count, topology.shards), strict=True))
