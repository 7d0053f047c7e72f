"""Read-your-writes across workers through the freshness feed, against the real Redis and shards:
another worker knows of a write before it returns, without asking Redis, and asks Redis again
whenever its feed cannot vouch for itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from messenger.domain.ids import new_id
from messenger.metrics import Metrics
from messenger.settings import Settings
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.freshness import FreshnessMarkers
from messenger.storage.shards.freshness_feed import FreshnessFeed
from messenger.storage.shards.pools import PoolSizing, ShardPools
from messenger.storage.shards.router import ShardRouter
from messenger.storage.users import INSERT_USER, SELECT_USER
from tests.e2e.api.conftest import lagging_replicas
from tests.support.waiting import wait_for_async

TTL_MS = 600


@dataclass
class Worker:
    router: ShardRouter
    markers: FreshnessMarkers
    feed: FreshnessFeed


class CountingClient:
    """Stands in for a worker's marker client: answers like Redis with no marker, and counts."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def command(self, *args: str) -> object:
        self.commands.append(args[0])
        return None

    async def close(self) -> None:
        pass


@asynccontextmanager
async def worker(cluster: Any) -> AsyncIterator[Worker]:
    settings = replace(Settings.from_env(cluster.topology_path, workers=1), freshness_ttl_ms=TTL_MS)
    url = settings.topology.redis_url
    pools = ShardPools(settings.topology.shards, PoolSizing(1, 2, 1.0), app_name="feed-test")
    await pools.open()
    feed = FreshnessFeed(url, ttl_s=TTL_MS / 1000, timeout_s=0.5)
    feed.start()
    markers = FreshnessMarkers(
        url, ttl_ms=TTL_MS, timeout_s=0.5, breaker=CircuitBreaker("redis", failure_threshold=1), feed=feed,
    )
    router = ShardRouter(settings.topology, pools, markers, settings, Metrics())
    await router.check_shard(0)
    try:
        await wait_for_async(_async(lambda: feed.complete), 5, "the feed to be complete")
        yield Worker(router, markers, feed)
    finally:
        await router.stop_monitor()
        await markers.close()
        await feed.close()
        await pools.close()


def _async(condition: Any) -> Any:
    async def check() -> Any:
        return condition()

    return check


async def test_a_write_on_one_worker_is_read_by_another_without_asking_redis(cluster: Any) -> None:
    async with worker(cluster) as writer, worker(cluster) as reader:
        counting = CountingClient()
        reader.markers._client = counting  # type: ignore[assignment]
        with lagging_replicas(cluster.topology):
            for _ in range(20):
                user_id = new_id()
                await writer.router.write_key(user_id, INSERT_USER, (user_id, "F", "Eed"), name="add_user")
                # The replica is 2 s behind: only the marker, heard by the reader's feed before
                # the write returned, sends this read to the primary.
                rows = await reader.router.read_key(user_id, SELECT_USER, (user_id,), name="get_user")
                assert rows and rows[0][0] == user_id
        assert counting.commands == []


async def test_a_worker_whose_subscription_was_cut_asks_redis_until_its_feed_is_complete_again(
    cluster: Any,
) -> None:
    async with worker(cluster) as writer, worker(cluster) as reader:
        redis = Redis.from_url(reader.router.topology.redis_url)
        try:
            sock = reader.feed._sock
            assert sock is not None
            host, port = sock.getsockname()[:2]
            assert await redis.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
            await wait_for_async(_async(lambda: not reader.feed.complete), 5, "the feed to notice")
        finally:
            await redis.aclose()
        with lagging_replicas(cluster.topology):
            user_id = new_id()
            await writer.router.write_key(user_id, INSERT_USER, (user_id, "F", "Eed"), name="add_user")
            # Asked Redis (the feed cannot say): the marker sends the read to the primary.
            rows = await reader.router.read_key(user_id, SELECT_USER, (user_id,), name="get_user")
            assert rows and rows[0][0] == user_id
        await wait_for_async(_async(lambda: reader.feed.complete), 5, "the feed to be complete again")
        assert reader.feed._sock is not None and reader.feed._sock.getsockname()[1] != port
