"""The session cluster: servers, roles, replication, PgBouncer routing, status."""

from __future__ import annotations

import os
import time
import uuid

import psycopg

from messenger.cluster.local import LocalCluster
from messenger.cluster.status import LARGEST_TABLES, cluster_status, table_sizes
from messenger.storage.migrator import head_revision
from messenger.storage.shards.ring import HashRing


def test_up_again_is_idempotent_and_fast(cluster: LocalCluster) -> None:
    before = cluster.topology
    started = time.monotonic()
    again = cluster.up()
    assert again == before
    assert time.monotonic() - started < 10
    assert all(row.up for row in cluster_status(cluster))


def test_servers_run_as_an_unprivileged_user_inside_a_root_only_directory(cluster: LocalCluster) -> None:
    private = cluster.data_dir.parent  # created 0700: others may not even enter it
    assert private.stat().st_mode & 0o007 == 0
    pgdata = cluster.layout.pgdata(0, "primary")
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0


def test_rw_and_ro_entries_reach_the_primary_and_the_replica(cluster: LocalCluster) -> None:
    for shard in cluster.topology.shards:
        for dsn, in_recovery in ((shard.rw_dsn, False), (shard.ro_dsn, True)):
            with psycopg.connect(dsn, prepare_threshold=None, connect_timeout=3) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            assert row == (in_recovery,), f"{shard.name}: {dsn.rsplit('/', 1)[1]}"


def test_a_row_written_on_a_primary_appears_on_its_replica(cluster: LocalCluster) -> None:
    shard = cluster.topology.shards[-1]
    ring = HashRing(cluster.topology.shard_indexes)
    user_id = next(u for u in iter(uuid.uuid4, None) if ring.shard_for(str(u)) == shard.index)
    with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Repl', 'Icated')", (user_id,)
        )
    deadline = time.monotonic() + 10
    with psycopg.connect(shard.replica_dsn, autocommit=True) as conn:
        while conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is None:
            assert time.monotonic() < deadline, "row never reached the replica"
            time.sleep(0.05)


def test_status_reports_every_process_with_lag_sizes_and_versions(cluster: LocalCluster) -> None:
    rows = cluster_status(cluster)
    assert len(rows) == cluster.state.shards * 3 + 1
    assert all(r.up for r in rows)
    head = head_revision()
    for r in rows:
        if r.role in ("primary", "replica"):
            assert r.migration == head
            assert r.size_bytes and r.size_bytes > 0
        if r.role == "replica":
            assert r.lag_bytes is not None and r.lag_bytes >= 0, r
            assert r.lag_seconds is not None


def test_status_shows_a_stopped_replica_as_down(cluster: LocalCluster) -> None:
    cluster.stop_server(1, "replica")
    try:
        rows = {(r.shard, r.role): r for r in cluster_status(cluster)}
        assert not rows[("shard_1", "replica")].up
        assert rows[("shard_1", "primary")].up
    finally:
        cluster.start_server(1, "replica")
    assert all(r.up for r in cluster_status(cluster))


def test_status_lists_each_primarys_largest_tables_from_the_catalog(cluster: LocalCluster) -> None:
    for shard in cluster.topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")  # reltuples is -1 (unknown) until a table is analyzed
    primaries = [r for r in cluster_status(cluster) if r.role == "primary"]
    assert len(primaries) == cluster.state.shards
    for r in primaries:
        sizes = [t.total_bytes for t in r.largest_tables]
        assert 0 < len(sizes) <= LARGEST_TABLES and sizes == sorted(sizes, reverse=True), r
        assert all(t.rows_estimate is not None and t.rows_estimate >= 0 for t in r.largest_tables)
        assert r.size_bytes is not None and sum(sizes) <= r.size_bytes
        assert not any("_p" in t.table and t.table.startswith("users_") for t in r.largest_tables)
    replicas = [r for r in cluster_status(cluster) if r.role == "replica"]
    assert all(r.largest_tables == () for r in replicas)


def test_table_sizes_add_partitions_up_under_their_table(cluster: LocalCluster) -> None:
    shard = cluster.topology.shards[0]
    with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
        conn.execute("ANALYZE users")
        expected = conn.execute(
            "SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree('users') WHERE isleaf"
        ).fetchone()
    sizes = {t.table: t for t in table_sizes(shard.primary_dsn, limit=100)}
    assert expected is not None and sizes["users"].total_bytes == expected[0]
