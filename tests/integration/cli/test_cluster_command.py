"""`messenger cluster status` as an operator runs it: every server, then each shard's largest tables."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from messenger.cli import cluster as cluster_cli
from messenger.cluster.local import LocalCluster


def _app() -> typer.Typer:
    app = typer.Typer()
    cluster_cli.register(app)
    return app


def _status(cluster: LocalCluster, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        _app(), ["cluster", "status", "--data-dir", str(cluster.data_dir), *extra], terminal_width=200,
    )
    return result.exit_code, result.output


def test_status_shows_every_shards_largest_tables_and_database_size(cluster: LocalCluster) -> None:
    code, output = _status(cluster)
    assert code == 0, output
    assert "largest tables" in output and "users" in output and "MiB" in output
    for shard in cluster.topology.shards:
        assert output.count(shard.name) >= 4  # primary, replica, pgbouncer, and its tables


def test_status_json_carries_the_largest_tables(cluster: LocalCluster) -> None:
    code, output = _status(cluster, "--json")
    assert code == 0, output
    primaries = [r for r in json.loads(output) if r["role"] == "primary"]
    assert all(r["largest_tables"] and {"table", "total_bytes", "rows_estimate"} <= set(r["largest_tables"][0])
               for r in primaries)


def test_a_stopped_primary_shows_as_down_and_the_other_shards_still_report(cluster: LocalCluster) -> None:
    cluster.stop_server(2, "primary")
    try:
        code, output = _status(cluster, "--json")
        rows = {(r["shard"], r["role"]): r for r in json.loads(output)}
        assert code == 1  # something is down
        assert rows[("shard_2", "primary")]["up"] is False and rows[("shard_2", "primary")]["largest_tables"] == []
        assert rows[("shard_0", "primary")]["largest_tables"]
        code, text = _status(cluster)
        assert code == 1 and "down" in text and "largest tables" in text
    finally:
        cluster.start_server(2, "primary")
