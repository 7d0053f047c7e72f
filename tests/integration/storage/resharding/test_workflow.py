"""The persisted workflow over one route between two real shards: it stops and resumes at a
phase boundary, one runs at a time, a rollback after the switch loses nothing, and a full run
ends with the rows on the target only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from messenger.storage.resharding.plan import ReshardPlan, Route, plan_add
from messenger.storage.resharding.workflow import (
    ROLLED_BACK,
    Reshard,
    StateStore,
    WorkflowError,
    WorkflowState,
)
from messenger.storage.shards.ring import ring_position
from messenger.topology import ShardConfig, Topology
from tests.integration.storage.resharding.conftest import ids_in, spare_shard

USERS = 25


@pytest.fixture(scope="module")
def users(cluster) -> list[str]:
    return []


@pytest.fixture(scope="module")
def plan(cluster, users: list[str]) -> Iterator[ReshardPlan]:
    """One route from shard 1 whose ranges are the positions of a few users of our own: a
    full run deletes what it moved from the source, and the session's other rows stay put."""
    with spare_shard(cluster, "reshard_workflow") as target:
        whole = plan_add(cluster.topology, (target,))
        users.extend(str(u) for u in ids_in(whole.routes_from(1)[0].ranges, USERS))
        positions = sorted({ring_position(u) for u in users})
        yield replace(whole, routes=(Route(1, target.index, tuple((p, p + 1) for p in positions)),))


def _users_in(shard: ShardConfig, plan: ReshardPlan) -> int:
    with psycopg.connect(shard.primary_dsn) as conn:
        return sum(
            conn.execute("SELECT count(*) FROM users WHERE ring_pos >= %s AND ring_pos < %s", r).fetchone()[0]  # type: ignore[index]
            for r in plan.routes[0].ranges
        )


@pytest.fixture
def seeded(plan: ReshardPlan, users: list[str]) -> Iterator[list[str]]:
    source = plan.old.shard(plan.routes[0].source)
    with psycopg.connect(source.primary_dsn) as conn:
        conn.execute(
            "INSERT INTO users (id, first_name, last_name) SELECT id, 'Flow', 'Row' FROM unnest(%s::uuid[]) id",
            (users,),
        )
    yield users
    with psycopg.connect(source.primary_dsn) as conn:
        conn.execute("DELETE FROM users WHERE id = ANY(%s::uuid[])", (users,))


def _reshard(tmp_path: Path, state: WorkflowState, published: list[Topology]) -> Reshard:
    return Reshard(StateStore(tmp_path), state, published.append, lambda epoch: True)


def test_a_run_stopped_before_the_switch_resumes_from_its_state_and_rolls_back_after_it(
    tmp_path: Path, plan: ReshardPlan, seeded: list[str]
) -> None:
    source, target = plan.old.shard(plan.routes[0].source), plan.new.shard(plan.routes[0].target)
    store, published = StateStore(tmp_path), []
    first = _reshard(tmp_path, WorkflowState("r1", plan), published)
    with store.locked():
        first.run(until="switch")
    resumed = store.latest()
    assert resumed is not None and resumed.phase == "switch"
    assert resumed.findings["verify"]["rows"] >= len(seeded)
    assert _users_in(target, plan) == _users_in(source, plan)

    again = _reshard(tmp_path, resumed, published)
    again.run(until="cleanup")
    assert [t.epoch for t in published] == [plan.new.epoch]
    with psycopg.connect(target.primary_dsn) as conn:
        conn.execute("UPDATE users SET first_name = 'AfterSwitch' WHERE id = %s", (seeded[0],))

    again.rollback()
    assert store.latest().phase == ROLLED_BACK  # type: ignore[union-attr]
    assert [t.epoch for t in published] == [plan.new.epoch, plan.new.epoch + 1]
    assert _users_in(target, plan) == 0
    with psycopg.connect(source.primary_dsn) as conn:
        row = conn.execute("SELECT first_name FROM users WHERE id = %s", (seeded[0],)).fetchone()
        assert row == ("AfterSwitch",)
        conn.execute("UPDATE users SET first_name = 'Writable' WHERE id = %s", (seeded[0],))
        conn.execute("DELETE FROM ring_fence WHERE workflow = 'r1'")
    with psycopg.connect(target.primary_dsn) as conn:
        conn.execute("DELETE FROM ring_fence WHERE workflow = 'r1'")


def test_a_second_workflow_is_refused_while_one_runs(tmp_path: Path, plan: ReshardPlan) -> None:
    store = StateStore(tmp_path)
    store.save(WorkflowState("r2", plan, phase="verify"))
    with store.locked(), pytest.raises(WorkflowError, match=r"r2 .*is running"), StateStore(tmp_path).locked():
        pass


def test_a_full_run_leaves_the_moved_rows_on_the_target_only(
    tmp_path: Path, plan: ReshardPlan, seeded: list[str]
) -> None:
    source, target = plan.old.shard(plan.routes[0].source), plan.new.shard(plan.routes[0].target)
    before = _users_in(source, plan)
    published: list[Topology] = []
    reshard = _reshard(tmp_path, WorkflowState("r3", plan), published)
    state = reshard.run()
    assert state.phase == "done" and published == [plan.new]
    assert _users_in(source, plan) == 0 and _users_in(target, plan) == before
    assert state.findings["cleanup"]["deleted"]["users"] == before
    with pytest.raises(WorkflowError, match="no way back"):
        reshard.rollback()
    with psycopg.connect(source.primary_dsn) as conn:
        conn.execute("DELETE FROM ring_fence WHERE workflow = 'r3'")
