"""Counting the moving rows on the sources, and refusing shards that cannot take part."""

from __future__ import annotations

from dataclasses import replace
from uuid import uuid4

import psycopg
import pytest

from messenger.storage.resharding.counts import (
    ShardsNotReady,
    check_shards,
    count_moving_rows,
    misplaced_rows,
)
from messenger.storage.resharding.plan import next_shard_indexes, plan_add, plan_remove
from messenger.storage.shards.ring import HashRing
from messenger.topology import ShardConfig


def new_shard(index: int) -> ShardConfig:
    return ShardConfig(index, f"shard_{index}", "", "", "", "")


def users_by_new_owner(cluster, ring: HashRing) -> dict[int, int]:
    """Per shard of `ring`, how many of the users the current shards own would move to it
    (rows some other test left on a shard that does not own them are not moved by anyone)."""
    old = HashRing.for_topology(cluster.topology)
    owners: dict[int, int] = {}
    for shard in cluster.topology.shards:
        with psycopg.connect(shard.primary_dsn) as conn:
            for (position,) in conn.execute("SELECT ring_pos FROM users"):
                owner = ring.shard_at(position)
                if old.shard_at(position) == shard.index != owner:
                    owners[owner] = owners.get(owner, 0) + 1
    return owners


def test_the_rows_counted_as_moving_are_the_rows_the_new_ring_places_elsewhere(cluster) -> None:
    topology = cluster.topology
    ring = HashRing.for_topology(topology)
    ids = [uuid4() for _ in range(300)]
    for shard in topology.shards:
        mine = [str(i) for i in ids if ring.shard_for_uuid(i) == shard.index]
        with psycopg.connect(shard.primary_dsn) as conn:
            conn.execute(
                "INSERT INTO users (id, first_name, last_name) SELECT id, 'Count', 'Rows' FROM unnest(%s::uuid[]) id",
                (mine,),
            )
    try:
        plan = plan_add(topology, tuple(new_shard(i) for i in next_shard_indexes(topology, 1)))
        moving = count_moving_rows(plan)
        predicted = users_by_new_owner(cluster, HashRing.for_topology(plan.new))
        users_moving, _ = moving.by_table()["users"]
        assert users_moving == sum(predicted.values()) == predicted[plan.joining[0]]
        assert {c.table for c in moving.counts} >= {"users", "outbox", "messages"}
    finally:
        for shard in topology.shards:
            with psycopg.connect(shard.primary_dsn) as conn:
                conn.execute("DELETE FROM users WHERE id = ANY(%s)", ([str(i) for i in ids],))


def test_removing_a_shard_counts_all_its_rows_as_moving(cluster) -> None:
    plan = plan_remove(cluster.topology, 1)
    moving, _ = count_moving_rows(plan).by_table()["users"]
    # All of shard 1's own rows (not rows another test left on a shard that does not own them).
    assert moving == sum(users_by_new_owner(cluster, HashRing.for_topology(plan.new)).values())


def test_a_row_on_a_shard_its_ring_does_not_name_counts_as_misplaced_there_and_only_there(cluster) -> None:
    topology = cluster.topology
    ring = HashRing.for_topology(topology)
    before = misplaced_rows(topology)  # other tests may have left some
    stray = uuid4()
    wrong = next(s for s in topology.shards if s.index != ring.shard_for_uuid(stray))
    with psycopg.connect(wrong.primary_dsn) as conn:
        conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Stray', 'Row')", (stray,))
    try:
        after = misplaced_rows(topology)
        assert after[wrong.name]["users"] == before[wrong.name]["users"] + 1
        assert {name: by for name, by in after.items() if name != wrong.name} == {
            name: by for name, by in before.items() if name != wrong.name
        }
    finally:
        with psycopg.connect(wrong.primary_dsn) as conn:
            conn.execute("DELETE FROM users WHERE id = %s", (stray,))


def test_shards_at_head_with_every_table_registered_are_ready(cluster) -> None:
    check_shards(cluster.topology.shards)


def test_an_unreachable_shard_is_named_and_the_plan_refused(cluster) -> None:
    dead = replace(cluster.topology.shard(2), primary_dsn="postgresql://messenger@127.0.0.1:1/messenger")
    with pytest.raises(ShardsNotReady, match="shard_2 is unreachable"):
        check_shards((cluster.topology.shard(0), dead))


def test_a_shard_at_another_schema_version_is_refused(cluster) -> None:
    shard = cluster.topology.shard(1)
    with psycopg.connect(shard.primary_dsn) as conn:
        (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    # A second database on the same server stands in for a shard left behind by a migration.
    with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS behind")
        conn.execute("CREATE DATABASE behind")
    behind_dsn = shard.primary_dsn.rsplit("/", 1)[0] + "/behind"
    try:
        with psycopg.connect(behind_dsn) as conn:
            conn.execute("CREATE TABLE alembic_version (version_num text)")
            conn.execute("INSERT INTO alembic_version VALUES ('0001')")
        with pytest.raises(ShardsNotReady, match=f"shard_1 is at schema 0001, not head {head}"):
            check_shards((replace(shard, primary_dsn=behind_dsn),))
    finally:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS behind WITH (FORCE)")
