"""`messenger shards plan` as an operator runs it: a plan and nothing changed, or a clear refusal."""

from __future__ import annotations

import json

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from messenger.cli import shards


def _app() -> typer.Typer:
    app = typer.Typer()
    shards.register(app)
    return app


def _users(cluster) -> list[int]:
    counts = []
    for shard in cluster.topology.shards:
        with psycopg.connect(shard.primary_dsn) as conn:
            counts.append(conn.execute("SELECT count(*) FROM users").fetchone()[0])
    return counts


def test_plan_add_shows_the_routes_and_rows_and_changes_nothing(cluster) -> None:
    before = _users(cluster), cluster.topology_path.read_text()
    result = CliRunner().invoke(_app(), ["shards", "plan", "--add", "1", "--topology", str(cluster.topology_path)])
    assert result.exit_code == 0, result.output
    assert "shard_3" in result.output and "of the key space moves" in result.output
    assert "nothing changed" in result.output
    assert (_users(cluster), cluster.topology_path.read_text()) == before


def test_plan_as_json_lists_every_route_and_table(cluster) -> None:
    args = ["shards", "plan", "--remove", "2", "--json", "--topology", str(cluster.topology_path)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["kind"] == "remove" and plan["epoch"] == {"from": 1, "to": 2}
    assert {r["source"] for r in plan["routes"]} == {"shard_2"}
    assert {r["table"] for r in plan["rows"]} >= {"users", "messages", "outbox"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--add", "0"], "at least 1"),
        (["--remove", "9"], "no shard 9"),
        (["--add", "1", "--remove", "0"], "exactly one of"),
        ([], "exactly one of"),
    ],
)
def test_plans_that_cannot_be_made_fail_with_a_reason(cluster, args: list[str], message: str) -> None:
    result = CliRunner().invoke(_app(), ["shards", "plan", *args, "--topology", str(cluster.topology_path)])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())


def test_plan_with_a_missing_topology_file_fails_cleanly(tmp_path) -> None:
    result = CliRunner().invoke(_app(), ["shards", "plan", "--add", "1", "--topology", str(tmp_path / "none.toml")])
    assert result.exit_code == 1 and "not found" in result.output
