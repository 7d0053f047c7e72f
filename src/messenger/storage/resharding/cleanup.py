"""After the switch: the replication between a route's shards goes and the moved rows leave the
source, in batches its replica can follow; the `moved` fence stays and keeps refusing.

Also the way back: `inverted` turns a switched plan into the plan of its rollback (the same
routes the other way round, the old shards at the next epoch), which `switch` runs like any
other, taking the reverse replication for its copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from psycopg import Connection, sql

from messenger.storage.resharding.counts import connect
from messenger.storage.resharding.plan import ReshardPlan, Route
from messenger.storage.resharding.replication import (
    RouteNames,
    drop_publication,
    drop_slot,
    drop_subscription,
)
from messenger.storage.sharded_tables import SHARDED_TABLES
from messenger.topology import ShardConfig

BATCH = 2_000
MAX_REPLICA_LAG_S = 1.0
DELETE_TIMEOUT_MS = 60_000

DELETE_BATCH_SQL = """
DELETE FROM {table} WHERE ({key}) IN (
    SELECT {key} FROM {table} WHERE ring_pos >= %(lo)s AND ring_pos < %(hi)s LIMIT %(batch)s
)
"""

REPLICA_LAG_SQL = """
SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication
WHERE application_name NOT LIKE 'reshard_%'
"""


@dataclass(frozen=True, slots=True)
class Deleted:
    table: str
    rows: int


def inverted(plan: ReshardPlan) -> ReshardPlan:
    """The rollback of a switched plan: every route back to where it came from."""
    back = tuple(Route(r.target, r.source, r.ranges) for r in plan.routes)
    old_ring = replace(plan.old, epoch=plan.new.epoch + 1)
    return ReshardPlan(f"rollback of {plan.kind}", plan.new, old_ring, back)


def drop_replication(workflow: str, route: Route, source: ShardConfig, target: ShardConfig) -> None:
    """Every publication and subscription of the route, in either direction."""
    names = RouteNames(workflow, route)
    drop_subscription(source, names.back)
    drop_slot(target, names.back)  # made ahead of its subscription: a stop in between leaves it
    drop_publication(target, names.back)
    drop_subscription(target, names.copy)
    drop_slot(source, names.copy)
    drop_publication(source, names.copy)


def delete_moved_rows(
    route: Route,
    source: ShardConfig,
    *,
    batch: int = BATCH,
    max_lag_s: float = MAX_REPLICA_LAG_S,
    progress: Callable[[Deleted], None] = lambda _: None,
) -> dict[str, int]:
    """Delete the route's rows from its source, children before parents, `batch` rows per
    transaction, waiting while the source's replica is more than `max_lag_s` behind."""
    deleted: dict[str, int] = {}
    with connect(source, statement_timeout_ms=DELETE_TIMEOUT_MS) as conn:
        for table in reversed(SHARDED_TABLES):
            key = sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key)
            query = sql.SQL(DELETE_BATCH_SQL).format(table=sql.Identifier(table.name), key=key)
            total = 0
            for lo, hi in route.ranges:
                while True:
                    with conn.transaction():
                        conn.execute("SET LOCAL messenger.fence_bypass = 'on'")
                        rows = conn.execute(query, {"lo": lo, "hi": hi, "batch": batch}).rowcount
                    total += rows
                    if rows:
                        progress(Deleted(table.name, rows))
                    if rows < batch:
                        break
                    _wait_for_replica(conn, max_lag_s)
            deleted[table.name] = total
        for table in SHARDED_TABLES:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table.name)))
    return deleted


def _wait_for_replica(conn: Connection[tuple[Any, ...]], max_lag_s: float, *, give_up_s: float = 60.0) -> None:
    """Hold the next batch while the source's streaming replica is behind (bounded: a replica
    that is gone must not stall the clean-up forever; its slot keeps what it needs)."""
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        row = conn.execute(REPLICA_LAG_SQL).fetchone()
        if row is None or row[0] <= max_lag_s:
            return
        time.sleep(0.1)
