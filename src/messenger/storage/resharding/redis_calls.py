"""What the (synchronous) workflow says through Redis when it runs from a command line:
publishing a ring, asking whether every process adopted it, announcing its state. Each call is
one short connection of its own, closed after, so a Redis that is down costs one call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from redis.asyncio import Redis

from messenger.storage.shards.topology_watch import adopted_everywhere, publish_topology
from messenger.topology import Topology

T = TypeVar("T")


def call_redis(url: str, use: Callable[[Redis], Awaitable[T]], *, timeout_s: float = 5.0) -> T:
    async def call() -> T:
        redis = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            return await use(redis)
        finally:
            await redis.aclose()

    return asyncio.run(call())


def publish_ring(topology: Topology, path: Path) -> None:
    """Write the topology file and tell every process its epoch (`publish_topology`)."""
    call_redis(topology.redis_url, lambda redis: publish_topology(topology, path, redis))


def adoption(redis_url: str, epoch: int) -> tuple[bool, list[str]]:
    """Whether every live process is on `epoch` or later, and the ones that are not."""
    return call_redis(redis_url, lambda redis: adopted_everywhere(redis, epoch))
