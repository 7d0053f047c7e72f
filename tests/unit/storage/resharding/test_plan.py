"""The plan of a reshard: exactly the ring's moves, grouped by source and target."""

from __future__ import annotations

from pathlib import Path

import pytest

from messenger.storage.resharding.plan import PlanError, next_shard_indexes, plan_add, plan_remove
from messenger.storage.shards.ring import RING_SIZE, HashRing
from messenger.topology import ShardConfig, Topology


def shard(index: int) -> ShardConfig:
    dsn = f"postgresql://127.0.0.1:{5000 + index}/messenger"
    return ShardConfig(index, f"shard_{index}", dsn, dsn, dsn, dsn)


def topology(*indexes: int, epoch: int = 3) -> Topology:
    return Topology(epoch, tuple(shard(i) for i in indexes), "redis://127.0.0.1:1/0", Path("t.toml"))


def test_adding_a_shard_to_five_moves_the_ring_predicted_share_all_to_the_new_one() -> None:
    plan = plan_add(topology(0, 1, 2, 3, 4), (shard(5),))
    assert plan.new.epoch == 4 and plan.new.shard_indexes == (0, 1, 2, 3, 4, 5)
    assert {r.target for r in plan.routes} == {5}
    assert {r.source for r in plan.routes} == {0, 1, 2, 3, 4}
    assert round(plan.moved_fraction, 4) == 0.1526
    assert plan.joining == (5,) and plan.leaving == ()


def test_the_routes_are_exactly_the_ring_moves_and_every_position_lands_where_the_new_ring_says() -> None:
    plan = plan_add(topology(0, 1, 2), (shard(3),))
    old, new = HashRing([0, 1, 2]), HashRing([0, 1, 2, 3])
    assert sum(len(r.ranges) for r in plan.routes) == len(old.moves(new))
    for route in plan.routes:
        for lo, hi in route.ranges:
            for position in (lo, hi - 1, (lo + hi) // 2):
                assert old.shard_at(position) == route.source
                assert new.shard_at(position) == route.target


def test_removing_a_shard_moves_everything_it_owned_and_nothing_else() -> None:
    plan = plan_remove(topology(0, 1, 2, 3), 2)
    assert {r.source for r in plan.routes} == {2}
    assert plan.new.shard_indexes == (0, 1, 3) and plan.leaving == (2,)
    owned = sum(hi - lo for lo, hi in HashRing([0, 1, 2, 3]).ranges_for(2)) / RING_SIZE
    assert plan.moved_fraction == pytest.approx(owned)


def test_new_shards_take_indexes_above_every_index_ever_used() -> None:
    assert next_shard_indexes(topology(0, 1, 4), 2) == (5, 6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda: next_shard_indexes(topology(0, 1), 0), "at least 1"),
        (lambda: plan_remove(topology(0, 1), 7), "no shard 7"),
        (lambda: plan_remove(topology(0), 0), "last shard"),
        (lambda: plan_add(topology(0, 1), (shard(1),)), "already in the topology"),
        (lambda: plan_add(topology(0, 1), ()), "nothing to add"),
    ],
)
def test_changes_that_cannot_be_planned_are_refused_with_a_reason(change, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        change()
