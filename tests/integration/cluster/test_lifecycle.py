"""Stopping, restarting and destroying a cluster: a small one of its own, not the session's."""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from messenger.cli.main import app
from messenger.cluster.daemon import port_is_free
from messenger.cluster.local import ClusterError, LocalCluster
from messenger.cluster.status import cluster_status
from messenger.storage.migrator import migrate
from tests.support.ports import free_base_port


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="messenger-lifecycle-"))
    local = LocalCluster(root / "cluster", shards=1, base_port=free_base_port(1))
    try:
        local.up()
        migrate(local.topology)
        yield local
    finally:
        local.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _count(dsn: str, user_id: uuid.UUID) -> int:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute("SELECT count(*) FROM users WHERE id = %s", (user_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_down_then_up_keeps_the_data(small_cluster: LocalCluster) -> None:
    shard = small_cluster.topology.shards[0]
    user_id = uuid.uuid4()
    with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Kept', 'Row')", (user_id,))
    small_cluster.down()
    assert not any(r.up for r in cluster_status(small_cluster))
    small_cluster.up()
    assert all(r.up for r in cluster_status(small_cluster))
    assert _count(shard.primary_dsn, user_id) == 1


def test_a_half_made_replica_is_rebuilt_by_up(small_cluster: LocalCluster) -> None:
    replica = small_cluster.postgres(0, "replica")
    replica.stop(mode="immediate")
    (small_cluster.layout.shard_dir(0) / ".replica-ready").unlink()
    (replica.pgdata / "PG_VERSION").unlink()  # as if pg_basebackup died half-way
    small_cluster.up()
    rows = {r.role: r for r in cluster_status(small_cluster)}
    assert rows["replica"].up and rows["replica"].detail == ""


def test_status_cli_exits_non_zero_when_a_server_is_down(small_cluster: LocalCluster) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["cluster", "status", "--json", "--data-dir", str(small_cluster.data_dir)])
    assert ok.exit_code == 0, ok.output
    small_cluster.stop_server(0, "pgbouncer")
    try:
        down = runner.invoke(app, ["cluster", "status", "--data-dir", str(small_cluster.data_dir)])
        assert down.exit_code == 1
        assert "down" in down.output
    finally:
        small_cluster.start_server(0, "pgbouncer")


def test_a_port_in_use_is_named_in_the_error(tmp_path: Path) -> None:
    base = free_base_port(1)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base))
        squatter.listen()
        cluster = LocalCluster(tmp_path / "c", shards=1, base_port=base)
        with pytest.raises(ClusterError, match=rf"port {base} \(shard_0-primary\) is in use"):
            cluster.up()
    cluster.destroy()


def test_reopening_with_another_shape_is_refused(small_cluster: LocalCluster) -> None:
    with pytest.raises(ClusterError, match="has 1 shards, not 3"):
        LocalCluster(small_cluster.data_dir, shards=3)


def test_destroy_removes_everything(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", shards=1, base_port=free_base_port(1))
    cluster.up()
    pid_file = cluster.layout.pgdata(0, "primary") / "postmaster.pid"
    assert pid_file.exists()
    result = CliRunner().invoke(app, ["cluster", "destroy", "--yes", "--data-dir", str(cluster.data_dir)])
    assert result.exit_code == 0, result.output
    assert not cluster.data_dir.exists()
    assert all(port_is_free(port) for port in cluster.layout.all_ports())


def test_migrate_with_a_missing_topology_file_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["migrate", "status", "--topology", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "not found" in result.output and "messenger cluster up" in result.output


def test_up_keeps_a_topology_a_reshard_published(small_cluster: LocalCluster) -> None:
    from dataclasses import replace

    from messenger.topology import dump_topology, load_topology

    first = small_cluster.topology
    resharded = replace(first, epoch=first.epoch + 1)
    dump_topology(resharded, small_cluster.topology_path)
    try:
        assert small_cluster.up().epoch == resharded.epoch
        assert load_topology(small_cluster.topology_path).epoch == resharded.epoch
    finally:
        dump_topology(first, small_cluster.topology_path)
