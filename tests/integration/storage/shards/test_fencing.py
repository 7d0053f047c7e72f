"""The router against the resharding fence on real shards: a stale topology reloads and
retries, a frozen range waits, neither opens a breaker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from messenger.domain.errors import RangeMoved
from messenger.domain.ids import new_id
from messenger.metrics import Metrics
from messenger.settings import Settings
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.freshness import FreshnessMarkers
from messenger.storage.shards.pools import PoolSizing, ShardPools
from messenger.storage.shards.ring import HashRing, ring_position
from messenger.storage.shards.router import ShardRouter
from messenger.storage.users import INSERT_USER, SELECT_USER
from messenger.topology import Topology, dump_topology

WORKFLOW = "test-router-fence"


@asynccontextmanager
async def stale_router(cluster: Any, tmp_path: Path) -> AsyncIterator[tuple[ShardRouter, Topology]]:
    """A router on epoch E with two of the three shards, while the file says E + 1 with all."""
    real: Topology = cluster.topology
    current = replace(real, epoch=real.epoch + 1, path=tmp_path / "topology.toml")
    dump_topology(current, current.path)  # type: ignore[arg-type]
    stale = replace(real, shards=real.shards[:2], path=current.path)
    async with router_on(stale) as router:
        yield router, current


@asynccontextmanager
async def router_on(topology: Topology) -> AsyncIterator[ShardRouter]:
    pools = ShardPools(topology.shards, PoolSizing(1, 4, 1.0), app_name="fence-test")
    await pools.open()
    freshness = FreshnessMarkers(
        topology.redis_url, ttl_ms=5000, timeout_s=0.25, breaker=CircuitBreaker("redis", failure_threshold=1)
    )
    router = ShardRouter(topology, pools, freshness, Settings(topology), Metrics())
    try:
        yield router
    finally:
        await router.stop_monitor()
        await freshness.close()
        await pools.close()


def moving_key(stale: Topology, current: Topology) -> tuple[uuid.UUID, int, int]:
    """A new id the stale ring puts on one shard and the current ring on another."""
    old, new = HashRing.for_topology(stale), HashRing.for_topology(current)
    while True:
        key = new_id()
        if old.shard_for(str(key)) != new.shard_for(str(key)):
            return key, old.shard_for(str(key)), new.shard_for(str(key))


@contextmanager
def fenced(topology: Topology, shard: int, key: uuid.UUID, state: str) -> Iterator[psycopg.Connection[Any]]:
    position = ring_position(str(key))
    with psycopg.connect(topology.shard(shard).primary_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ring_fence (lo, hi, state, workflow) VALUES (%s, %s, %s, %s)",
            (position, position + 1, state, WORKFLOW),
        )
        try:
            yield conn
        finally:
            conn.execute("DELETE FROM ring_fence WHERE workflow = %s", (WORKFLOW,))


def on_shard(topology: Topology, shard: int, key: uuid.UUID) -> bool:
    with psycopg.connect(topology.shard(shard).primary_dsn, autocommit=True) as conn:
        return conn.execute(SELECT_USER, (key,)).fetchone() is not None


async def test_a_write_refused_as_not_owned_reloads_the_topology_and_lands_on_the_new_shard(
    cluster: Any, tmp_path: Path
) -> None:
    async with stale_router(cluster, tmp_path) as (router, current):
        key, old, new = moving_key(router.topology, current)
        with fenced(current, old, key, "moved"):
            written = await router.write_key(key, INSERT_USER, (key, "F", "M"), name="add_user")
        assert router.topology.epoch == current.epoch
        assert written.token is not None and written.token.startswith(f"{current.epoch}.{new}.")
        assert on_shard(current, new, key) and not on_shard(current, old, key)
        assert not router.breaker_open(old, "primary")


async def test_a_write_to_a_range_frozen_briefly_waits_and_succeeds(cluster: Any, tmp_path: Path) -> None:
    async with stale_router(cluster, tmp_path) as (router, _):
        key = new_id()
        shard = router.shard_for(key)
        with fenced(cluster.topology, shard, key, "frozen") as conn:
            async def lift() -> None:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(conn.execute, "DELETE FROM ring_fence WHERE workflow = %s", (WORKFLOW,))

            lifting = asyncio.create_task(lift())
            started = time.monotonic()
            written = await router.write_key(key, INSERT_USER, (key, "F", "Z"), name="add_user")
            waited = time.monotonic() - started
            await lifting
        assert written.rows and 0.4 < waited < 2.0
        assert not router.breaker_open(shard, "primary")


async def test_a_write_to_a_range_frozen_past_three_seconds_is_refused_as_range_moved(
    cluster: Any, tmp_path: Path
) -> None:
    async with stale_router(cluster, tmp_path) as (router, _):
        key = new_id()
        shard = router.shard_for(key)
        with fenced(cluster.topology, shard, key, "frozen"):
            started = time.monotonic()
            with pytest.raises(RangeMoved) as refused:
                await router.write_key(key, INSERT_USER, (key, "F", "Z"), name="add_user")
            assert 2.9 < time.monotonic() - started < 4.5
        assert refused.value.code == "range_moved"
        assert refused.value.details["shard"] == router.shard_name(shard)
        assert not router.breaker_open(shard, "primary")
        assert not on_shard(cluster.topology, shard, key)


async def test_a_transaction_refused_as_not_owned_raises_range_moved_after_adopting(
    cluster: Any, tmp_path: Path
) -> None:
    async with stale_router(cluster, tmp_path) as (router, current):
        key, old, _ = moving_key(router.topology, current)
        with fenced(current, old, key, "moved"), pytest.raises(RangeMoved):
            async with router.transaction_for(key, name="add_user") as conn:
                await conn.execute(INSERT_USER, (key, "T", "M"))
        assert router.topology.epoch == current.epoch
        assert router.shard_indexes == current.shard_indexes
        assert not router.breaker_open(old, "primary")
        assert not on_shard(current, old, key)


async def test_a_read_that_picked_a_shard_just_before_it_left_the_ring_is_still_answered(cluster: Any) -> None:
    real: Topology = cluster.topology
    leaving = real.shards[-1].index
    async with router_on(real) as router:
        key = next(k for k in (new_id() for _ in range(1000)) if router.shard_for(k) == leaving)
        # The read picks the shard, then asks Redis for the key's marker; the shard leaves meanwhile.
        read = asyncio.ensure_future(router.read(leaving, SELECT_USER, (key,), key=str(key), name="get_user"))
        await asyncio.sleep(0)
        await router.adopt(replace(real, epoch=real.epoch + 1, shards=real.shards[:-1]))
        assert await read == []
