"""A shard that stops answering during a reshard, on a cluster of the module's own (shard 0 in
the ring, shard 1's servers joining): the copy waits and says so, never going on with half a
copy; a target down at the switch aborts it with the source's writes released and the old ring
in force, and a resume after it is back finishes the move."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import migrate
from messenger.storage.resharding.plan import ReshardPlan, plan_add
from messenger.storage.resharding.switch import SwitchAborted
from messenger.storage.resharding.workflow import ROLLED_BACK, Reshard, StateStore, WorkflowState
from messenger.topology import Topology
from tests.support.clusters import insert_users, private_cluster
from tests.support.waiting import wait_for

USERS = 200


@pytest.fixture(scope="module")
def joining() -> Iterator[tuple[LocalCluster, ReshardPlan]]:
    with private_cluster(1) as local:
        insert_users(local.topology.shard(0).primary_dsn, USERS)
        ring = local.topology
        (new,) = local.add_shards(1)
        assert all(o.ok for o in migrate(replace(ring, shards=(new,))))
        yield local, plan_add(ring, (new,))


@pytest.fixture
def reshard(joining: tuple[LocalCluster, ReshardPlan], tmp_path: Path) -> Iterator[tuple[Reshard, list[str], list[Topology]]]:
    local, plan = joining
    said: list[str] = []
    published: list[Topology] = []
    flow = Reshard(StateStore(tmp_path), WorkflowState(f"r{uuid4().hex[:10]}", plan), published.append,
                   lambda epoch: True, progress=said.append, wait_s=60)
    yield flow, said, published
    for index in (0, 1):  # the next test starts from shards without fences
        if not local.server(index, "primary").is_running():
            local.start_server(index, "primary")
        with psycopg.connect(local.topology.shard(index).primary_dsn) as conn:
            conn.execute("DELETE FROM ring_fence")


def _users(local: LocalCluster, index: int) -> int:
    with psycopg.connect(local.topology.shard(index).primary_dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize("down", [0, 1], ids=["source", "target"])
def test_the_copy_waits_for_a_shard_that_is_down_and_says_so(
    joining: tuple[LocalCluster, ReshardPlan], reshard: tuple[Reshard, list[str], list[Topology]], down: int
) -> None:
    local, _ = joining
    flow, said, published = reshard
    local.stop_server(down, "primary")
    run = threading.Thread(target=flow.run, kwargs={"until": "switch"}, daemon=True)
    run.start()
    wait_for(lambda: any(f"shard_{down} is unreachable" in line and "waits" in line for line in said), 30,
             "the workflow saying which shard it waits for")
    assert flow.state.phase == "copy" and not published

    local.start_server(down, "primary")
    run.join(timeout=90)
    assert not run.is_alive() and flow.state.phase == "switch"
    assert flow.state.findings["verify"]["rows"] > 0

    flow.rollback()
    assert flow.state.phase == ROLLED_BACK and _users(local, 0) == USERS and _users(local, 1) == 0


def test_a_target_down_at_the_switch_aborts_it_and_a_resume_finishes_the_move(
    joining: tuple[LocalCluster, ReshardPlan], reshard: tuple[Reshard, list[str], list[Topology]]
) -> None:
    local, plan = joining
    flow, _, published = reshard
    flow.run(until="switch")
    local.stop_server(1, "primary")

    with pytest.raises(SwitchAborted, match="shard_1"):
        flow.run(until="cleanup")
    assert flow.state.phase == "switch" and not published
    with psycopg.connect(local.topology.shard(0).primary_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ring_fence").fetchone() == (0,)  # writes released
        conn.execute("UPDATE users SET first_name = 'WhileAborted'")  # every key writable, moving ones too

    local.start_server(1, "primary")
    flow.run(until="cleanup")
    assert published == [plan.new]
    with psycopg.connect(local.topology.shard(1).primary_dsn) as conn:
        moved = conn.execute("SELECT count(*), count(*) FILTER (WHERE first_name = 'WhileAborted') FROM users").fetchone()
    assert moved is not None and moved[0] > 0 and moved[0] == moved[1]

    flow.rollback()
    assert flow.state.phase == ROLLED_BACK and _users(local, 0) == USERS and _users(local, 1) == 0
