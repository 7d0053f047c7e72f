"""`messenger check references` as an operator runs it: planted damage of every kind is found
(counts per kind and shard, a sample), reported in a table or JSON with a failing exit code,
and `--repair` leaves a cluster the next run finds clean."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from messenger.cli import check
from messenger.domain.ids import new_id
from messenger.storage.shards.ring import HashRing
from messenger.topology import Topology, dump_topology


def _app() -> typer.Typer:
    app = typer.Typer()
    check.register(app)
    app.command(name="noop", hidden=True)(lambda: None)  # keeps `check` a sub-command
    return app


def _run(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(_app(), ["check", "references", "--topology", str(path), *args])
    return result.exit_code, result.stdout


@pytest.fixture(scope="module")
def topology_file(rel_topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("check") / "topology.toml"
    dump_topology(rel_topology, path)
    return path


def _sql(topology: Topology, shard: int, sql: str, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(topology.shard(shard).primary_dsn, autocommit=True) as conn:
        conn.execute(sql, params)


def _user_on(ring: HashRing, shard: int) -> uuid.UUID:
    while True:
        user_id = new_id()
        if ring.shard_for(str(user_id)) == shard:
            return user_id


def _plant_damage(topology: Topology) -> dict[str, int]:
    """One finding of each kind; returns the problems each kind must report."""
    ring = HashRing(topology.shard_indexes)
    alice, bob, carol = _user_on(ring, 0), _user_on(ring, 1), _user_on(ring, 2)
    for user, shard in ((alice, 0), (bob, 1), (carol, 2)):
        _sql(topology, shard, "INSERT INTO users (id, first_name, last_name) VALUES (%s, 'N', 'N')", (user,))
    ghost = _user_on(ring, 1)
    # alice -> ghost: points at nothing; alice -> bob: no reverse edge, stale name copy.
    _sql(topology, 0, """INSERT INTO follows (follower_id, followee_id, id, followee_first_name, followee_last_name)
                         VALUES (%s, %s, %s, 'Gh', 'Ost'), (%s, %s, %s, 'Old', 'N')""",
         (alice, ghost, new_id(), alice, bob, new_id()))
    _sql(topology, 0, "UPDATE users SET following_count = 2 WHERE id = %s", (alice,))
    # carol is followed by bob according to carol's shard only; carol's counter is off too.
    _sql(topology, 2, """INSERT INTO followers (followee_id, follower_id, id, follower_first_name,
                         follower_last_name, created_at) VALUES (%s, %s, %s, 'N', 'N', now())""",
         (carol, bob, new_id()))
    # A confirmed username claim no account holds.
    name = f"lost{uuid.uuid4().hex[:8]}"
    _sql(topology, ring.shard_for(name), """INSERT INTO username_claims (username, user_id, reservation_id, state)
         VALUES (%s, %s, %s, 'confirmed')""", (name, ghost, new_id()))
    return {"follows": 3, "followers": 1, "follow_counts": 1, "username_claims": 1}


def test_check_references_reports_planted_damage_then_repairs_it(
    rel_topology: Topology, topology_file: Path
) -> None:
    code, output = _run(topology_file)
    assert code == 0, output  # a fresh cluster is clean
    expected = _plant_damage(rel_topology)

    code, output = _run(topology_file, "--json")
    assert code == 1, output
    report = json.loads(output)
    assert not report["ok"]
    found = {k["kind"]: k["found"] for k in report["kinds"]}
    assert {kind: found[kind] for kind in expected} == expected
    assert found["email_claims"] == found["account_claims"] == 0
    follows = next(k for k in report["kinds"] if k["kind"] == "follows")
    shard_0 = follows["shards"][0]
    assert shard_0["problems"] == {"dangling": 1, "missing_twin": 1, "stale_copy": 1}
    assert {s["problem"] for s in shard_0["sample"]} == {"dangling", "missing_twin", "stale_copy"}
    assert [r["shard"] for r in report["relay"]] == ["shard_0", "shard_1", "shard_2"]

    code, table = _run(topology_file)
    assert code == 1 and "dangling 1" in table and "problem(s) left" in table

    code, output = _run(topology_file, "--repair", "--json")
    assert code == 0, output
    assert json.loads(output)["kinds"][0]["repaired"] == 3
    code, output = _run(topology_file)
    assert code == 0 and "references: ok" in output, output


def test_dead_letters_fail_the_check_until_repair_requeues_them(
    rel_topology: Topology, topology_file: Path
) -> None:
    _sql(rel_topology, 1, """INSERT INTO outbox (id, aggregate, type, payload, attempts, dead_at, last_error)
                             VALUES (%s, 'user:x', 'user.renamed', %s, 12, now(), 'boom')""",
         (new_id(), json.dumps({"user_id": str(uuid.uuid4())})))
    code, output = _run(topology_file)
    assert code == 1 and "boom" in output
    code, output = _run(topology_file, "--repair", "--json")
    relay = {r["shard"]: r for r in json.loads(output)["relay"]}
    assert code == 0 and relay["shard_1"]["requeued"] == 1
    code, output = _run(topology_file, "--json")
    assert json.loads(output)["relay"][1]["pending"] == 1  # back in line for the relay


def test_an_unreachable_topology_shard_exits_2(tmp_path: Path, rel_topology: Topology) -> None:
    from dataclasses import replace

    broken = replace(rel_topology, shards=(
        *rel_topology.shards[:2],
        replace(rel_topology.shards[2], rw_dsn="postgresql://nobody@127.0.0.1:1/none"),
    ))
    path = tmp_path / "topology.toml"
    dump_topology(broken, path)
    code, output = _run(path, "--json")
    assert code == 2
    assert json.loads(output)["unreachable_shards"] == ["shard_2"]
