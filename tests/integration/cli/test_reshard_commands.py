"""`messenger shards add / status / resume / rollback` as an operator runs them on a local
cluster of its own (one shard, then two): servers created, rows moved, ring published, and
clear refusals where there is nothing to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from messenger.cli import shards
from messenger.cluster.local import LocalCluster
from messenger.storage.shards.ring import HashRing
from messenger.topology import load_topology
from tests.support.clusters import insert_users, private_cluster, user_ids

USERS = 300


def _app() -> typer.Typer:
    app = typer.Typer()
    shards.register(app)
    return app


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(_app(), ["shards", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def one_shard() -> Iterator[LocalCluster]:
    with private_cluster(1) as local:
        insert_users(local.topology.shard(0).primary_dsn, USERS)
        yield local


def test_status_resume_and_rollback_without_a_workflow_say_so(tmp_path: Path) -> None:
    for command in ("status", "resume", "rollback"):
        code, output = _invoke(command, "--state-dir", str(tmp_path))
        assert code == 1 and "no resharding workflow" in output, (command, output)


def test_add_refuses_half_a_shard_description_and_a_missing_cluster(tmp_path: Path) -> None:
    code, output = _invoke("add", "--rw-dsn", "postgresql://x/y", "--yes", "--state-dir", str(tmp_path))
    assert code == 1 and "all four" in output
    code, output = _invoke("add", "--data-dir", str(tmp_path / "none"), "--yes", "--state-dir", str(tmp_path))
    assert code == 1 and "no local cluster" in output
    assert not list(tmp_path.glob("r*"))


def test_add_without_yes_asks_and_a_no_changes_nothing(one_shard: LocalCluster, tmp_path: Path) -> None:
    before = one_shard.topology_path.read_text()
    result = CliRunner().invoke(
        _app(), ["shards", "add", "--data-dir", str(one_shard.data_dir), "--state-dir", str(tmp_path)], input="n\n"
    )
    assert result.exit_code == 1 and "nothing changed" in result.output, result.output
    assert one_shard.topology_path.read_text() == before and LocalCluster(one_shard.data_dir).state.shards == 1
    assert not list(tmp_path.glob("r*"))


def test_add_creates_a_shard_moves_its_keys_and_publishes_the_ring(one_shard: LocalCluster, tmp_path: Path) -> None:
    everyone = user_ids(one_shard.topology.shard(0).primary_dsn)
    code, output = _invoke("add", "--yes", "--data-dir", str(one_shard.data_dir), "--state-dir", str(tmp_path))
    assert code == 0, output

    ring = load_topology(one_shard.topology_path)
    assert ring.epoch == 2 and ring.shard_indexes == (0, 1)
    old, new = (user_ids(ring.shard(i).primary_dsn) for i in (0, 1))
    assert old | new == everyone and not old & new and new, (len(old), len(new))
    placed = HashRing.for_topology(ring)
    assert all(placed.shard_for(u) == 1 for u in new) and all(placed.shard_for(u) == 0 for u in old)

    again = LocalCluster(one_shard.data_dir)
    assert again.state.shards == 2 and again.up() == ring  # `cluster up` keeps the published ring

    code, output = _invoke("status", "--json", "--state-dir", str(tmp_path))
    state = json.loads(output)
    assert code == 0 and state["phase"] == "done" and state["findings"]["verify"]["rows"] >= len(new)
    report = tmp_path / state["id"]
    assert {p.name for p in report.iterdir()} >= {"state.json", "report.md", "report.json", "distribution.png"}
    assert "postgresql://" not in (report / "report.json").read_text() + (report / "report.md").read_text()
    assert json.loads((report / "report.json").read_text())["rows_after"]["shard_1"]["users"] == len(new)

    code, output = _invoke("rollback", "--state-dir", str(tmp_path))
    assert code == 1 and "no way back" in output
    code, output = _invoke("resume", "--state-dir", str(tmp_path))
    assert code == 1 and "nothing to resume" in output


def test_remove_drains_the_added_shard_back_and_retires_it(one_shard: LocalCluster, tmp_path: Path) -> None:
    """Runs after the add above: shard 1 gives every row back to shard 0."""
    ring = load_topology(one_shard.topology_path)
    assert ring.shard_indexes == (0, 1)
    everyone = user_ids(ring.shard(0).primary_dsn) | user_ids(ring.shard(1).primary_dsn)
    code, output = _invoke("remove", "1", "--yes", "--topology", str(one_shard.topology_path),
                           "--state-dir", str(tmp_path))
    assert code == 0, output
    after = load_topology(one_shard.topology_path)
    assert after.epoch == 3 and after.shard_indexes == (0,)
    assert user_ids(ring.shard(0).primary_dsn) == everyone and not user_ids(ring.shard(1).primary_dsn)

    code, output = _invoke("remove", "0", "--yes", "--topology", str(one_shard.topology_path),
                           "--state-dir", str(tmp_path))
    assert code == 1 and "last" in output, output
