"""Verification of a route's copy, like Vitess's VDiff: the same rows on both sides, proven at
one consistent point.

The source's ranges are frozen only long enough for the target to catch up and for both sides
to open a repeatable-read snapshot; the writes are released and the comparison runs inside the
two snapshots, which show the same moment of the ranges' history. Per table and range: a
count and an order-independent checksum of the rows' text; for any range that disagrees, a
row-by-row diff by primary key (missing on the target, extra on the target, different).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from messenger.storage.resharding.counts import connect
from messenger.storage.resharding.freeze import frozen
from messenger.storage.resharding.plan import Route
from messenger.storage.sharded_tables import SHARDED_TABLES, ShardedTable
from messenger.topology import ShardConfig

VERIFY_TIMEOUT_MS = 600_000
SAMPLES = 5

CHECKSUM_SQL = """
SELECT r.i::int, count(*), sum(hashtextextended(x::text, 0)::numeric)::text
FROM unnest(%(lo)s::bigint[], %(hi)s::bigint[]) WITH ORDINALITY AS r(lo, hi, i)
JOIN {table} AS x ON x.ring_pos >= r.lo AND x.ring_pos < r.hi
GROUP BY r.i
"""

ROWS_SQL = """
SELECT ({key})::text, hashtextextended(x::text, 0)
FROM {table} AS x WHERE x.ring_pos >= %(lo)s AND x.ring_pos < %(hi)s
"""

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class RangeDiff:
    table: str
    range: tuple[int, int]
    missing: int
    """On the source, not on the target."""
    extra: int
    """On the target, not on the source."""
    different: int
    samples: tuple[str, ...]


@dataclass(slots=True)
class TableCheck:
    table: str
    rows: int = 0
    ranges_differing: int = 0


@dataclass(slots=True)
class RouteVerification:
    source: str
    target: str
    lsn: str = ""
    freeze_s: float = 0.0
    """How long the route's writes were held to take the consistent point."""
    tables: list[TableCheck] = field(default_factory=list)
    diffs: list[RangeDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diffs

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def _snapshot(shard: ShardConfig) -> Conn:
    conn = connect(shard, statement_timeout_ms=VERIFY_TIMEOUT_MS)
    conn.execute("SET TimeZone = 'UTC'")  # the rows' text must not depend on the server
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    conn.execute("SELECT 1")  # the snapshot is taken by the first statement
    return conn


def verify_route(
    workflow: str,
    route: Route,
    source: ShardConfig,
    target: ShardConfig,
    subscription: str,
    *,
    progress: Callable[[TableCheck], None] = lambda _: None,
) -> RouteVerification:
    result = RouteVerification(source.name, target.name)
    started = time.monotonic()
    with frozen(workflow, route, source, target, subscription) as lsn:
        at_source, at_target = _snapshot(source), _snapshot(target)
    result.freeze_s = time.monotonic() - started
    result.lsn = lsn
    try:
        for table in SHARDED_TABLES:
            check = _compare_table(at_source, at_target, table, route, result.diffs)
            result.tables.append(check)
            progress(check)
    finally:
        at_source.close()
        at_target.close()
    return result


def _sums(conn: Conn, table: ShardedTable, route: Route) -> dict[int, tuple[int, str]]:
    query = sql.SQL(CHECKSUM_SQL).format(table=sql.Identifier(table.name))
    params = {"lo": [r[0] for r in route.ranges], "hi": [r[1] for r in route.ranges]}
    return {int(i): (int(n), str(s)) for i, n, s in conn.execute(query, params)}


def _compare_table(
    at_source: Conn, at_target: Conn, table: ShardedTable, route: Route, diffs: list[RangeDiff]
) -> TableCheck:
    mine, theirs = _sums(at_source, table, route), _sums(at_target, table, route)
    check = TableCheck(table.name, rows=sum(n for n, _ in mine.values()))
    for i in sorted(set(mine) | set(theirs)):
        if mine.get(i) != theirs.get(i):
            check.ranges_differing += 1
            diffs.append(_diff_range(at_source, at_target, table, route.ranges[i - 1]))
    return check


def _rows(conn: Conn, table: ShardedTable, span: tuple[int, int]) -> dict[str, int]:
    key = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key))
    query = sql.SQL(ROWS_SQL).format(key=key, table=sql.Identifier(table.name))
    return dict(conn.execute(query, {"lo": span[0], "hi": span[1]}).fetchall())


def _diff_range(at_source: Conn, at_target: Conn, table: ShardedTable, span: tuple[int, int]) -> RangeDiff:
    mine, theirs = _rows(at_source, table, span), _rows(at_target, table, span)
    missing = sorted(set(mine) - set(theirs))
    extra = sorted(set(theirs) - set(mine))
    different = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
    samples = [f"missing {k}" for k in missing[:SAMPLES]] + [f"extra {k}" for k in extra[:SAMPLES]]
    samples += [f"different {k}" for k in different[:SAMPLES]]
    return RangeDiff(table.name, span, len(missing), len(extra), len(different), tuple(samples))
