"""The router's policy over fake servers: key-first calls, markers, tokens, names."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from messenger.domain.errors import RangeMoved
from messenger.metrics import Metrics
from messenger.settings import Settings
from messenger.storage.shards.router import ShardRouter
from messenger.storage.shards.statements import REPLAY_POSITION_SQL
from messenger.topology import ShardConfig, Topology
from tests.unit.storage.shards.fake_pool import FakeShardPools, Rows

TOPOLOGY = Topology(
    epoch=3,
    shards=tuple(ShardConfig(i, f"shard_{i}", "rw", "ro", "rw", "ro") for i in range(3)),
    redis_url="redis://unused",
)
USER = uuid.UUID("01890000-0000-7000-8000-000000000001")


class FakeFreshness:
    def __init__(self) -> None:
        self.markers: dict[str, int] = {}

    async def mark(self, key: str, lsn: int) -> bool:
        self.markers[key] = max(lsn, self.markers.get(key, 0))
        return True

    async def get(self, key: str) -> int | None:
        return self.markers.get(key)


async def answer(sql: str, params: Any) -> list[Rows]:
    if "COMMIT" in sql:
        return [[("row",)], [("0/20",)]]
    if REPLAY_POSITION_SQL in sql:
        return [[("0/10",)], [("row",)]]  # the replica has replayed up to 0/10
    return [[("row",)]]


def make_router() -> tuple[ShardRouter, FakeShardPools, FakeFreshness, Metrics]:
    pools, freshness, metrics = FakeShardPools(answer), FakeFreshness(), Metrics()
    router = ShardRouter(TOPOLOGY, pools, freshness, Settings(TOPOLOGY), metrics)  # type: ignore[arg-type]
    return router, pools, freshness, metrics


def served(pools: FakeShardPools, role: str) -> list[int]:
    return [shard for (shard, r), pool in sorted(pools.pools.items()) if r == role and pool.executed]


async def test_a_key_first_read_goes_to_the_keys_shard_replica() -> None:
    router, pools, _, _ = make_router()
    assert await router.read_key(USER, "SELECT 1", (), name="get_user") == [("row",)]
    assert served(pools, "replica") == [router.ring.shard_for(str(USER))]
    assert served(pools, "primary") == []


async def test_a_key_first_write_marks_the_key_as_text_and_returns_a_token() -> None:
    router, _, freshness, _ = make_router()
    written = await router.write_key(USER, "INSERT ... RETURNING 1", (), name="add_user")
    shard = router.ring.shard_for(str(USER))
    assert written.token == f"3.{shard}.20"
    assert freshness.markers == {str(USER): 0x20}


async def test_a_key_written_past_what_the_replica_replayed_is_read_from_the_primary() -> None:
    router, pools, freshness, metrics = make_router()
    await freshness.mark(str(USER), 0x20)
    await router.read_key(USER, "SELECT 1", (), name="get_user")
    shard = router.ring.shard_for(str(USER))
    assert served(pools, "primary") == [shard]
    labels = {"shard": f"shard_{shard}", "served_by": "primary", "reason": "replica_behind_write"}
    assert metrics.registry.get_sample_value("db_reads_total", labels) == 1


async def test_a_token_the_replica_has_replayed_lets_the_replica_answer() -> None:
    router, pools, _, _ = make_router()
    shard = router.ring.shard_for(str(USER))
    await router.read_key(USER, "SELECT 1", (), name="get_user", token=f"3.{shard}.8")
    assert served(pools, "replica") == [shard] and served(pools, "primary") == []


async def test_statements_are_timed_under_their_names() -> None:
    router, _, _, metrics = make_router()
    await router.read_key(USER, "SELECT 1", (), name="get_user")
    labels = {"shard": router.shard_name(router.shard_for(USER)), "role": "replica", "query": "get_user"}
    assert metrics.registry.get_sample_value("db_query_duration_seconds_count", labels) == 1



def _topology(epoch: int, shards: range) -> Topology:
    return Topology(
        epoch=epoch,
        shards=tuple(ShardConfig(i, f"shard_{i}", "rw", "ro", "rw", "ro") for i in shards),
        redis_url="redis://unused",
    )


async def test_adopting_a_newer_epoch_swaps_ring_and_shards_and_keeps_unchanged_endpoints() -> None:
    router, _, _, _ = make_router()
    kept = router.endpoint(0, "primary")
    assert await router.adopt(_topology(4, range(4)))
    assert router.topology.epoch == 4 and router.shard_indexes == (0, 1, 2, 3)
    assert router.ring.shard_indexes == (0, 1, 2, 3)
    assert router.endpoint(0, "primary") is kept
    assert router.state(3).replica_up  # the monitor knows the new shard
    written = await router.write(3, "INSERT ... RETURNING 1", (), key=None, name="add_user")
    assert written.token == "4.3.20"
    await router.stop_monitor()


async def test_adopting_the_same_or_an_older_epoch_changes_nothing() -> None:
    router, _, _, _ = make_router()
    ring = router.ring
    assert not await router.adopt(_topology(3, range(4)))
    assert not await router.adopt(_topology(2, range(2)))
    assert router.ring is ring and router.topology.epoch == 3


async def test_adopting_a_topology_without_a_shard_drops_it() -> None:
    router, pools, _, _ = make_router()
    assert await router.adopt(_topology(4, range(2)))
    assert router.shard_indexes == (0, 1)
    assert (2, "primary") not in pools.pools
    await router.stop_monitor()


async def test_a_shard_that_left_is_named_and_refuses_reads_as_moved() -> None:
    router, _, _, _ = make_router()
    await router.adopt(_topology(4, range(2)))
    assert router.shard_name(2) == "shard 2 (left the ring)"  # the relay logs it, mid-pass
    with pytest.raises(RangeMoved):
        await router.read(2, "SELECT 1", (), name="get_user")
    await router.stop_monitor()


async def test_a_token_of_an_older_epoch_sends_the_read_to_the_primary() -> None:
    router, pools, _, metrics = make_router()
    shard = router.ring.shard_for(str(USER))
    await router.read_key(USER, "SELECT 1", (), name="get_user", token=f"2.{shard}.8")
    assert served(pools, "primary") == [shard] and served(pools, "replica") == []
    labels = {"shard": f"shard_{shard}", "served_by": "primary", "reason": "token_other_epoch"}
    assert metrics.registry.get_sample_value("db_reads_total", labels) == 1
