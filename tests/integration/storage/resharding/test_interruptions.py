"""A reshard interrupted, on a cluster of the module's own (shard 0 in the ring, shard 1's
servers joining): stopped at every phase boundary, or killed mid-switch, then resumed, it ends
as an uninterrupted run; a shard that stops answering makes the copy wait and say so, never
going on with half a copy; a target down at the switch aborts it with the source's writes
released and the old ring in force, and a resume after it is back finishes the move."""

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
from messenger.storage.resharding import switch as switch_module
from messenger.storage.resharding.plan import ReshardPlan, plan_add
from messenger.storage.resharding.replication import fence
from messenger.storage.resharding.switch import SwitchAborted
from messenger.storage.resharding.workflow import (
    PHASES,
    ROLLED_BACK,
    Reshard,
    StateStore,
    WorkflowState,
)
from messenger.storage.shards.ring import HashRing
from messenger.topology import Topology
from tests.support.clusters import insert_users, private_cluster, user_ids
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
    everyone = user_ids(plan.old.shard(0).primary_dsn)
    yield flow, said, published
    for index in (0, 1):  # the next test starts from every user on shard 0 and no fences
        if not local.server(index, "primary").is_running():
            local.start_server(index, "primary")
        with psycopg.connect(local.topology.shard(index).primary_dsn) as conn:
            conn.execute("DELETE FROM ring_fence")
            conn.execute("TRUNCATE users CASCADE")
    with psycopg.connect(plan.old.shard(0).primary_dsn) as conn:
        conn.execute("INSERT INTO users (id, first_name, last_name) SELECT id, 'Moving', 'Row' FROM unnest(%s::uuid[]) id",
                     (list(everyone),))


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


def _placed_by(ring: Topology, local: LocalCluster) -> bool:
    """Every user on the shard `ring` names, and on that one only."""
    placed = HashRing.for_topology(ring)
    return all(
        placed.shard_for(user) == index
        for index in (0, 1)
        for user in user_ids(local.topology.shard(index).primary_dsn)
    )


@pytest.mark.parametrize("stop", (*PHASES[1:-1], "done"), ids=lambda p: f"before-{p}")
def test_a_run_stopped_at_a_phase_boundary_resumes_to_the_same_end(
    joining: tuple[LocalCluster, ReshardPlan], reshard: tuple[Reshard, list[str], list[Topology]], stop: str
) -> None:
    local, plan = joining
    flow, _, published = reshard
    flow.run(until=stop)
    saved = flow.store.latest()
    assert saved is not None and saved.phase == stop

    # A new process (the first one was killed): only what the state file says.
    again = Reshard(flow.store, saved, published.append, lambda epoch: True, wait_s=60)
    assert again.run().phase == "done"
    assert published == [plan.new]  # once, whichever process published it
    assert _users(local, 0) + _users(local, 1) == USERS and _users(local, 1) > 0
    assert _placed_by(plan.new, local)


@pytest.mark.parametrize("then", ["resume", "rollback"])
def test_a_switch_killed_with_the_ranges_frozen_is_redone_by_resume_or_undone_by_rollback(
    joining: tuple[LocalCluster, ReshardPlan], reshard: tuple[Reshard, list[str], list[Topology]], then: str
) -> None:
    local, plan = joining
    flow, _, published = reshard
    flow.run(until="switch")
    source = plan.old.shard(0)
    for route in plan.routes:  # what a switch killed after its first step leaves
        fence(source, flow.state.id, route.ranges, "frozen")
    with psycopg.connect(source.primary_dsn) as conn, pytest.raises(psycopg.Error, match="frozen for a shard move"):
        conn.execute("UPDATE users SET first_name = 'Frozen'")

    again = Reshard(flow.store, flow.store.latest(), published.append, lambda epoch: True, wait_s=60)  # type: ignore[arg-type]
    if then == "resume":
        assert again.run().phase == "done" and published == [plan.new]
        assert _placed_by(plan.new, local)
        return
    again.rollback()
    assert again.state.phase == ROLLED_BACK and not published
    with psycopg.connect(source.primary_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ring_fence").fetchone() == (0,)
        conn.execute("UPDATE users SET first_name = 'Writable'")
    assert _users(local, 0) == USERS and _users(local, 1) == 0


def _first_name(dsn: str, user: object) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT first_name FROM users WHERE id = %s", (user,)).fetchone()
    return None if row is None else str(row[0])


@pytest.mark.parametrize("then", ["resume", "rollback"])
def test_a_run_stopped_after_the_publication_carries_the_targets_writes_back_once_resumed(
    joining: tuple[LocalCluster, ReshardPlan],
    reshard: tuple[Reshard, list[str], list[Topology]],
    monkeypatch: pytest.MonkeyPatch,
    then: str,
) -> None:
    """Stopped between the publication and the turn-around: the new ring writes on the target
    while the reverse subscription is not streaming yet; whatever comes next carries it back."""
    local, plan = joining
    flow, _, published = reshard
    flow.run(until="switch")
    real_fence = switch_module.fence

    def stopped_before_moved(shard: object, workflow: str, ranges: object, state: str) -> None:
        if state == "moved":
            raise KeyboardInterrupt
        real_fence(shard, workflow, ranges, state)  # type: ignore[arg-type]

    monkeypatch.setattr(switch_module, "fence", stopped_before_moved)
    with pytest.raises(KeyboardInterrupt):
        flow.run()
    monkeypatch.undo()
    assert published == [plan.new]
    source, target = plan.old.shard(0).primary_dsn, plan.new.shard(1).primary_dsn
    (user,) = list(user_ids(target))[:1]
    with psycopg.connect(target) as conn:
        assert conn.execute("UPDATE users SET first_name = 'AfterSwitch' WHERE id = %s", (user,)).rowcount == 1

    again = Reshard(flow.store, flow.store.latest(), published.append, lambda epoch: True, wait_s=60)  # type: ignore[arg-type]
    if then == "resume":
        assert again.run(until="cleanup").phase == "cleanup"
        wait_for(lambda: _first_name(source, user) == "AfterSwitch", 10, "the reverse replication to carry it")
        with psycopg.connect(target) as conn:  # the forward subscription went before the reverse one came
            assert conn.execute("SELECT count(*) FROM pg_subscription").fetchone() == (0,)
        assert again.run().phase == "done" and _placed_by(plan.new, local)
        return
    again.rollback()
    assert again.state.phase == ROLLED_BACK and _first_name(source, user) == "AfterSwitch"
    assert _users(local, 0) == USERS and _users(local, 1) == 0
    for dsn in (source, target):
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_type = %s", ("logical",)).fetchone() == (0,)
