"""Per-shard migrations on scratch databases of the session cluster."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

import psycopg

from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import check_drift, head_revision, migrate, shard_revision
from messenger.storage.shards.ring import ring_position
from tests.support.scratch import scratch_topology


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_up_down_up_round_trips_on_every_shard(cluster: LocalCluster) -> None:
    with scratch_topology(cluster.topology) as topology:
        head = head_revision()
        assert all(o.ok and o.after == head for o in migrate(topology, "up"))
        assert all({"users", "accounts", "users_accounts", "outbox"} <= _tables(s.primary_dsn) for s in topology.shards)
        assert all(o.ok and o.after is None for o in migrate(topology, "down", "base"))
        assert all(_tables(s.primary_dsn) == {"alembic_version"} for s in topology.shards)
        assert all(o.ok and o.after == head for o in migrate(topology, "up"))


def test_concurrent_runs_apply_each_revision_once(cluster: LocalCluster) -> None:
    with scratch_topology(cluster.topology) as topology:
        results: list[list] = []
        runs = [threading.Thread(target=lambda: results.append(migrate(topology))) for _ in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join()
        # A second application would fail on CREATE TABLE; both runs must end clean at head.
        assert all(o.ok for outcomes in results for o in outcomes), results
        for shard in topology.shards:
            assert shard_revision(shard) == head_revision()
            with psycopg.connect(shard.primary_dsn) as conn:
                row = conn.execute(
                    "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'alembic_version'"
                ).fetchone()
            assert row is not None and row[0] == 1


def test_drift_names_the_shard_that_is_behind(cluster: LocalCluster) -> None:
    with scratch_topology(cluster.topology) as topology:
        migrate(topology)
        behind = topology.shards[1]
        migrate(replace(topology, shards=(behind,)), "down", "base")
        report = check_drift(topology)
        assert not report.ok
        assert list(report.behind) == [behind.name]
        assert behind.name in report.message and "messenger migrate up" in report.message
        migrate(topology)
        assert check_drift(topology).ok


def test_session_cluster_is_at_head_without_drift(cluster: LocalCluster) -> None:
    report = check_drift(cluster.topology)
    assert report.ok and not report.unreachable


def test_ring_pos_column_equals_the_rings_position(cluster: LocalCluster) -> None:
    keys = [uuid.UUID(int=0), uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff")] + [uuid.uuid4() for _ in range(20)]
    shard = cluster.topology.shards[0]
    with psycopg.connect(shard.primary_dsn) as conn:  # rolled back: nothing is left behind
        for key in keys:
            conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'a', 'b')", (key,))
        rows = dict(conn.execute("SELECT id, ring_pos FROM users WHERE id = ANY(%s)", (keys,)).fetchall())
        conn.rollback()
    assert rows[uuid.UUID(int=0)] == 2676607050
    assert all(rows[k] == ring_position(str(k)) for k in keys)
