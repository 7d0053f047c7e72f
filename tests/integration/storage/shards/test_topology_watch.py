"""Processes adopt a published topology at run time, and report the epoch they are on."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from messenger.storage.shards.primaries import PrimaryPools
from messenger.storage.shards.router import ShardRouter
from messenger.storage.shards.topology_watch import (
    TopologyWatcher,
    adopted_everywhere,
    publish_topology,
)
from messenger.topology import dump_topology
from tests.integration.storage.shards.test_fencing import stale_router
from tests.support.waiting import wait_for_async


async def _adopted(router: ShardRouter, epoch: int) -> bool:
    return router.topology.epoch == epoch


async def test_a_published_epoch_is_adopted_within_a_second(cluster: Any, tmp_path: Path) -> None:
    redis = Redis.from_url(cluster.topology.redis_url)
    async def subscribers() -> int:
        return sum(count for _, count in await redis.pubsub_numsub("messenger:topology"))

    async with stale_router(cluster, tmp_path) as (router, current):
        # Other apps of the test session listen too: wait for one more, not for any.
        others = await subscribers()
        watcher = TopologyWatcher(router, current.path, redis, poll_s=60)  # pub/sub only
        watcher.start()
        try:
            newer = replace(current, epoch=current.epoch + 1)
            async def subscribed() -> bool:
                return await subscribers() > others

            await wait_for_async(subscribed, 3, "the watcher subscribed")
            started = time.monotonic()
            await publish_topology(newer, current.path, redis)  # type: ignore[arg-type]
            await wait_for_async(lambda: _adopted(router, newer.epoch), 1.5, "the published epoch adopted")
            assert time.monotonic() - started < 1.0
            assert router.shard_indexes == newer.shard_indexes
        finally:
            await watcher.stop()
            await redis.aclose()


async def test_a_changed_file_is_adopted_without_redis(cluster: Any, tmp_path: Path) -> None:
    redis = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    async with stale_router(cluster, tmp_path) as (router, current):
        watcher = TopologyWatcher(router, current.path, redis)
        watcher.start()
        try:
            newer = replace(current, epoch=current.epoch + 1)
            dump_topology(newer, current.path)  # type: ignore[arg-type]
            await wait_for_async(lambda: _adopted(router, newer.epoch), 2.5, "the file's epoch adopted")
        finally:
            await watcher.stop()
            await redis.aclose()


async def test_a_broken_file_keeps_the_current_topology(cluster: Any, tmp_path: Path) -> None:
    redis = Redis.from_url(cluster.topology.redis_url)
    async with stale_router(cluster, tmp_path) as (router, current):
        watcher = TopologyWatcher(router, current.path, redis)
        current.path.write_text("epoch = [broken")  # type: ignore[union-attr]
        assert not await watcher.check()
        assert router.topology.epoch == current.epoch - 1
        await redis.aclose()


async def test_heartbeats_tell_whether_every_process_adopted_an_epoch(cluster: Any, tmp_path: Path) -> None:
    redis = Redis.from_url(cluster.topology.redis_url)
    async with stale_router(cluster, tmp_path) as (router, current):
        watcher = TopologyWatcher(router, current.path, redis, identity="test-host:1")
        watcher.start()
        try:
            stale = router.topology.epoch

            async def beating() -> bool:
                return await redis.get(watcher.seen_key) is not None

            await wait_for_async(beating, 3, "a heartbeat")
            # Other processes of the session (API workers of other tests) beat here too.
            assert "test-host:1" not in (await adopted_everywhere(redis, stale))[1]
            done, laggards = await adopted_everywhere(redis, current.epoch)
            assert not done and "test-host:1" in laggards
            await watcher.check()

            async def caught_up() -> bool:
                return "test-host:1" not in (await adopted_everywhere(redis, current.epoch))[1]

            await wait_for_async(caught_up, 4, "every heartbeat at the new epoch")
        finally:
            await watcher.stop()
            await redis.aclose()


async def test_the_relay_processs_pools_adopt_a_newer_topology(cluster: Any, tmp_path: Path) -> None:
    real = cluster.topology
    current = replace(real, epoch=real.epoch + 1, path=tmp_path / "topology.toml")
    dump_topology(current, current.path)  # type: ignore[arg-type]
    redis = Redis.from_url(real.redis_url)
    async with PrimaryPools(replace(real, shards=real.shards[:2], path=current.path)) as pools:
        watcher = TopologyWatcher(pools, current.path, redis)
        assert await watcher.check()
        assert not await pools.adopt(current)  # the same epoch again: nothing happens
        assert pools.shard_indexes == real.shard_indexes
        last = real.shard_indexes[-1]
        async with pools.transaction(last, name="ping") as conn:
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    await redis.aclose()
