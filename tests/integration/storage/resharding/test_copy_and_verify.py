"""A route's copy by logical replication, its fence on the target, the freeze on its source,
and the VDiff-style verification, between two real shards.

The target is a fresh database, migrated to head, on shard 2's server: a shard that is not
in the ring yet, as `shards add` creates one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from uuid import UUID, uuid4

import psycopg
import pytest

from messenger.storage.resharding.counts import count_moving_rows
from messenger.storage.resharding.freeze import frozen
from messenger.storage.resharding.plan import ReshardPlan, Route, plan_add
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
from messenger.storage.resharding.verify import verify_route
from messenger.storage.shards.ring import ring_position
from messenger.topology import ShardConfig
from tests.integration.storage.resharding.conftest import ids_in, spare_shard
from tests.support.waiting import wait_for

WORKFLOW = "t1"
TARGET_DB = "reshard_target"


@pytest.fixture(scope="module")
def target(cluster) -> Iterator[ShardConfig]:
    with spare_shard(cluster, TARGET_DB) as shard:
        yield shard


@pytest.fixture(scope="module")
def plan(cluster, target: ShardConfig) -> ReshardPlan:
    return plan_add(cluster.topology, (target,))


@pytest.fixture(scope="module")
def route(plan: ReshardPlan) -> Route:
    return plan.routes_from(0)[0]


def _ids_in(route: Route, count: int) -> list[UUID]:
    return ids_in(route.ranges, count)


def _id_outside(route: Route, plan: ReshardPlan) -> UUID:
    while True:
        candidate = uuid4()
        position = ring_position(str(candidate))
        if not any(lo <= position < hi for r in plan.routes for lo, hi in r.ranges):
            from messenger.storage.shards.ring import HashRing

            if HashRing.for_topology(plan.old).shard_at(position) == route.source:
                return candidate


def _insert_users(shard: ShardConfig, ids: list[UUID]) -> None:
    with psycopg.connect(shard.primary_dsn) as conn:
        conn.execute(
            "INSERT INTO users (id, first_name, last_name) SELECT id, 'Moving', 'Row' FROM unnest(%s::uuid[]) id",
            ([str(i) for i in ids],),
        )


def _count(shard: ShardConfig, ids: list[UUID]) -> int:
    with psycopg.connect(shard.primary_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM users WHERE id = ANY(%s)", ([str(i) for i in ids],)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def copying(cluster, target: ShardConfig, route: Route) -> Iterator[tuple[str, list[UUID]]]:
    """The route's copy running, with some of its users seeded before it started."""
    source = cluster.topology.shard(route.source)
    seeded = _ids_in(route, 50)
    _insert_users(source, seeded)
    name = RouteNames(WORKFLOW, route).copy
    create_publication(source, name, route.ranges)
    fence(target, WORKFLOW, route.ranges, "incoming")
    create_subscription(target, source, name, copy_data=True)
    try:
        wait_for(lambda: copy_state(target, name).copied, 30, "the initial copy to finish")
        yield name, seeded
    finally:
        drop_subscription(target, name)
        drop_publication(source, name)
        unfence(target, WORKFLOW, route.ranges)
        with psycopg.connect(source.primary_dsn) as conn:
            conn.execute("DELETE FROM users WHERE first_name = 'Moving'")


def test_the_initial_copy_brings_exactly_the_routes_rows(cluster, plan, route, target, copying) -> None:
    _, seeded = copying
    assert _count(target, seeded) == len(seeded)
    moving = count_moving_rows(replace(plan, routes=(route,))).by_table()
    with psycopg.connect(target.primary_dsn) as conn:
        for table, (rows, _) in moving.items():
            (copied,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
            assert copied == rows, table


def test_writes_on_the_source_stream_to_the_target_in_order(cluster, route, target, copying) -> None:
    source = cluster.topology.shard(route.source)
    later = _ids_in(route, 3)
    _insert_users(source, later)
    with psycopg.connect(source.primary_dsn) as conn:
        conn.execute("UPDATE users SET first_name = 'Renamed' WHERE id = %s", (later[0],))
        conn.execute("DELETE FROM users WHERE id = %s", (later[1],))
    wait_for(lambda: _count(target, later) == 2, 10, "the changes to reach the target")
    with psycopg.connect(target.primary_dsn) as conn:
        row = conn.execute("SELECT first_name FROM users WHERE id = %s", (later[0],)).fetchone()
    assert row == ("Renamed",)


def test_the_target_refuses_application_writes_to_incoming_ranges(route, target, copying) -> None:
    with psycopg.connect(target.primary_dsn) as conn, pytest.raises(psycopg.Error) as refused:
        conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Early', 'Bird')", (_ids_in(route, 1)[0],))
    assert refused.value.sqlstate == "MF001"


def test_a_freeze_holds_only_the_moving_ranges_and_ends_with_the_target_caught_up(
    cluster, plan, route, target, copying
) -> None:
    name, _ = copying
    source = cluster.topology.shard(route.source)
    last = _ids_in(route, 1)
    _insert_users(source, last)
    started = time.monotonic()
    with frozen(WORKFLOW, route, source, target, name):
        assert _count(target, last) == 1  # caught up: the write before the freeze is there
        with psycopg.connect(source.primary_dsn) as conn, pytest.raises(psycopg.Error) as held:
            conn.execute("UPDATE users SET last_name = 'x' WHERE id = %s", (last[0],))
        assert held.value.sqlstate == "MF002"
        _insert_users(source, [_id_outside(route, plan)])  # any other key writes on
    assert time.monotonic() - started < 2.0
    with psycopg.connect(source.primary_dsn) as conn:
        assert conn.execute("UPDATE users SET last_name = 'x' WHERE id = %s", (last[0],)).rowcount == 1


def test_verification_of_a_faithful_copy_finds_no_difference(cluster, route, target, copying) -> None:
    name, seeded = copying
    result = verify_route(WORKFLOW, route, cluster.topology.shard(route.source), target, name)
    assert result.ok, result.diffs
    assert result.rows >= len(seeded)
    assert result.freeze_s < 2.0


def test_verification_names_missing_extra_and_different_rows(cluster, route, target, copying) -> None:
    name, seeded = copying
    stray = _ids_in(route, 1)[0]
    with psycopg.connect(target.primary_dsn) as conn:
        conn.execute("SET messenger.fence_bypass = 'on'")
        conn.execute("DELETE FROM users WHERE id = %s", (seeded[0],))
        conn.execute("UPDATE users SET last_name = 'Tampered' WHERE id = %s", (seeded[1],))
        conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Stray', 'Row')", (stray,))
    try:
        result = verify_route(WORKFLOW, route, cluster.topology.shard(route.source), target, name)
        assert not result.ok
        users = [d for d in result.diffs if d.table == "users"]
        assert (sum(d.missing for d in users), sum(d.extra for d in users), sum(d.different for d in users)) == (1, 1, 1)
        samples = " ".join(s for d in users for s in d.samples)
        assert str(seeded[0]) in samples and str(seeded[1]) in samples and str(stray) in samples
    finally:
        with psycopg.connect(target.primary_dsn) as conn:
            conn.execute("SET messenger.fence_bypass = 'on'")
            conn.execute("DELETE FROM users WHERE id = %s", (stray,))
