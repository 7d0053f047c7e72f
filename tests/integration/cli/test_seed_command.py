"""`messenger seed` as a user runs it: progress, then the per-shard table."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from messenger.cli import seed


def _text(output: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(output.split())


def _app() -> typer.Typer:
    app = typer.Typer()
    seed.register(app)
    return app


def test_seed_users_reports_the_load_and_every_shard(cluster) -> None:
    result = CliRunner().invoke(
        _app(), ["seed", "users", "300", "--topology", str(cluster.topology_path)]
    )
    assert result.exit_code == 0, result.output
    assert "Loaded 300 users" in _text(result.output)
    for shard in cluster.topology.shards:
        assert shard.name in result.output


def test_seed_demo_leaves_a_cluster_with_users_alone(cluster) -> None:
    args = ["seed", "users", "5", "--topology", str(cluster.topology_path)]
    assert CliRunner().invoke(_app(), args).exit_code == 0
    result = CliRunner().invoke(_app(), ["seed", "demo", "--topology", str(cluster.topology_path)])
    assert result.exit_code == 0, result.output
    assert "not seeding" in _text(result.output)


def test_seed_users_with_a_missing_topology_file_fails_cleanly(tmp_path) -> None:
    result = CliRunner().invoke(
        _app(), ["seed", "users", "1", "--topology", str(tmp_path / "none.toml")]
    )
    assert result.exit_code == 2
    assert "not found" in _text(result.output)
