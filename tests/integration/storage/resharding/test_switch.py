"""The switch of one route between two real shards: refused (and undone) when the target
disagrees, then done: the new ring owns the ranges, stale writers are fenced off the source,
and writes on the target flow back to the source for a rollback.

The target is a fresh database, migrated to head, on shard 2's server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from uuid import UUID

import psycopg
import pytest

from messenger.storage.resharding.cleanup import delete_moved_rows, drop_replication, inverted
from messenger.storage.resharding.plan import ReshardPlan, plan_add
from messenger.storage.resharding.replication import (
    RouteNames,
    copy_state,
    create_publication,
    create_subscription,
    drop_publication,
    drop_subscription,
    fence,
    unfence,
)
from messenger.storage.resharding.switch import SwitchAborted, switch
from messenger.topology import ShardConfig, Topology
from tests.integration.storage.resharding.conftest import ids_in, spare_shard
from tests.support.waiting import wait_for

WORKFLOW = "sw"
TARGET_DB = "reshard_switch"


@pytest.fixture(scope="module")
def plan(cluster) -> Iterator[ReshardPlan]:
    with spare_shard(cluster, TARGET_DB) as target:
        whole = plan_add(cluster.topology, (target,))
        yield replace(whole, routes=whole.routes_from(0)[:1])


def _ids_in(plan: ReshardPlan, count: int) -> list[UUID]:
    return ids_in(plan.routes[0].ranges, count)


def _execute(shard: ShardConfig, query: str, *params: object) -> int:
    with psycopg.connect(shard.primary_dsn) as conn:
        return conn.execute(query, params).rowcount


def _names(shard: ShardConfig, ids: list[UUID]) -> dict[UUID, str]:
    with psycopg.connect(shard.primary_dsn) as conn:
        return dict(conn.execute("SELECT id, first_name FROM users WHERE id = ANY(%s)", (ids,)).fetchall())


@pytest.fixture(scope="module")
def copying(plan: ReshardPlan) -> Iterator[list[UUID]]:
    (route,) = plan.routes
    source, target = plan.old.shard(route.source), plan.new.shard(route.target)
    names = RouteNames(WORKFLOW, route)
    seeded = _ids_in(plan, 20)
    for user in seeded:
        _execute(source, "INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Switch', 'Me')", user)
    create_publication(source, names.copy, route.ranges)
    fence(target, WORKFLOW, route.ranges, "incoming")
    create_subscription(target, source, names.copy, copy_data=True)
    try:
        wait_for(lambda: copy_state(target, names.copy).copied, 30, "the initial copy to finish")
        yield seeded
    finally:
        drop_subscription(source, names.back)
        drop_publication(target, names.back)
        drop_subscription(target, names.copy)
        drop_publication(source, names.copy)
        unfence(target, WORKFLOW, route.ranges)
        unfence(source, WORKFLOW, route.ranges)
        _execute(source, "DELETE FROM users WHERE last_name IN ('Me', 'Writer')")


def test_a_target_that_disagrees_aborts_the_switch_and_leaves_the_old_ring_working(plan, copying) -> None:
    (route,) = plan.routes
    source, target = plan.old.shard(route.source), plan.new.shard(route.target)
    stray = _ids_in(plan, 1)[0]
    published: list[Topology] = []
    with psycopg.connect(target.primary_dsn) as conn:
        conn.execute("SET messenger.fence_bypass = 'on'")
        conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Stray', 'Row')", (stray,))
    try:
        with pytest.raises(SwitchAborted, match="disagrees"):
            switch(WORKFLOW, plan, published.append)
    finally:
        with psycopg.connect(target.primary_dsn) as conn:
            conn.execute("SET messenger.fence_bypass = 'on'")
            conn.execute("DELETE FROM users WHERE id = %s", (stray,))
    assert published == []
    user = copying[0]
    assert _execute(source, "UPDATE users SET first_name = 'StillHere' WHERE id = %s", user) == 1
    wait_for(lambda: _names(target, [user]) == {user: "StillHere"}, 10, "forward replication to carry on")


@contextmanager
def wal_written_lazily(shard: ShardConfig) -> Iterator[None]:
    """The server writes its WAL out only when a commit asks for it: what an apply worker
    commits (asynchronously) stays in the WAL buffers meanwhile."""
    with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET wal_writer_delay")
            conn.execute("SELECT pg_reload_conf()")


def test_after_the_switch_the_target_owns_the_ranges_and_only_its_own_writes_flow_back(plan, copying) -> None:
    (route,) = plan.routes
    source, target = plan.old.shard(route.source), plan.new.shard(route.target)
    published: list[Topology] = []
    late = _ids_in(plan, 1)[0]
    with wal_written_lazily(target):
        # Applied on the target just before the switch: the reverse stream must start after it,
        # or it would bring the row back to the source, where it is already (and stop there).
        _execute(source, "INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Late', 'Writer')", late)
        wait_for(lambda: _names(target, [late]) == {late: "Late"}, 10, "the forward stream to apply the row")
        report = switch(WORKFLOW, plan, published.append)
    assert published == [plan.new]
    assert report.frozen_s < 3.0 and source.name in report.lsns

    user = copying[1]
    with psycopg.connect(source.primary_dsn) as conn, pytest.raises(psycopg.Error) as stale:
        conn.execute("UPDATE users SET first_name = 'Stale' WHERE id = %s", (user,))
    assert stale.value.sqlstate == "MF001"
    assert _execute(target, "UPDATE users SET first_name = 'Moved' WHERE id = %s", user) == 1
    wait_for(lambda: _names(source, [user]) == {user: "Moved"}, 10, "reverse replication to the source")


def _in_ranges(shard: ShardConfig, plan: ReshardPlan) -> int:
    (route,) = plan.routes
    with psycopg.connect(shard.primary_dsn) as conn:
        return sum(
            conn.execute("SELECT count(*) FROM users WHERE ring_pos >= %s AND ring_pos < %s", r).fetchone()[0]  # type: ignore[index]
            for r in route.ranges
        )


def test_a_rollback_after_the_switch_hands_the_ranges_back_with_the_writes_made_since(plan, copying) -> None:
    (route,) = plan.routes
    source, target = plan.old.shard(route.source), plan.new.shard(route.target)
    back = inverted(plan)
    published: list[Topology] = []
    switch(WORKFLOW, back, published.append)
    assert [t.shard_indexes for t in published] == [plan.old.shard_indexes]
    assert published[0].epoch == plan.new.epoch + 1  # epochs only grow: every process adopts it
    user = copying[1]
    assert _names(source, [user]) == {user: "Moved"}  # written on the target after the switch
    assert _execute(source, "UPDATE users SET first_name = 'Home' WHERE id = %s", user) == 1
    with psycopg.connect(target.primary_dsn) as conn, pytest.raises(psycopg.Error) as stale:
        conn.execute("UPDATE users SET first_name = 'Stale' WHERE id = %s", (user,))
    assert stale.value.sqlstate == "MF001"


def test_clean_up_after_the_rollback_empties_the_abandoned_shard_and_keeps_its_fence(plan, copying) -> None:
    (route,) = plan.routes
    source, target = plan.old.shard(route.source), plan.new.shard(route.target)
    back = inverted(plan)
    assert _in_ranges(target, plan) > 0
    drop_replication(WORKFLOW, back.routes[0], target, source)
    deleted = delete_moved_rows(back.routes[0], target, batch=7)
    assert deleted["users"] >= len(copying) and _in_ranges(target, plan) == 0
    assert _in_ranges(source, plan) >= len(copying)
    with psycopg.connect(target.primary_dsn) as conn:
        slots = conn.execute("SELECT count(*) FROM pg_subscription").fetchone()
        assert slots == (0,)
    with psycopg.connect(target.primary_dsn) as conn, pytest.raises(psycopg.Error) as refused:
        conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Late', 'Writer')", (_ids_in(plan, 1)[0],))
    assert refused.value.sqlstate == "MF001"
