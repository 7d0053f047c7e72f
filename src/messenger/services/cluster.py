"""The operator's view of the cluster, for the /cluster page: per shard, its three servers
(primary, replica, PgBouncer) up or down, replication lag, connections, rows against the
ring's share, and the outbox relay's backlog and dead letters.

"Up" is told two ways, because they fail apart: `listening` is a TCP connect to the server
itself (the process runs), `serving` is what this worker's router sees through PgBouncer (its
monitor's last probe, and the circuit breaker). A primary that listens but does not serve
points at PgBouncer; one that does neither is down.

A snapshot costs a handful of small queries per shard, so it is kept for `max_age_s`: a page
polling every two seconds from several browsers reads the shards at most once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from messenger.storage.cluster_readings import (
    ClusterReadings,
    RelayBacklog,
    endpoint,
    listening,
)
from messenger.storage.shards.pools import Role
from messenger.storage.shards.router import ShardRouter


@dataclass(frozen=True, slots=True)
class PoolUse:
    in_use: int
    idle: int
    waiting: int


@dataclass(frozen=True, slots=True)
class ServerStatus:
    listening: bool
    """The server accepts TCP connections."""
    serving: bool
    """This worker reaches it through PgBouncer (monitor probe ok, breaker closed)."""
    client_connections: int | None
    """Client backends on the server now (None: it did not answer)."""
    pool: PoolUse
    """This worker's pooled connections to it through PgBouncer."""


@dataclass(frozen=True, slots=True)
class PgBouncerStatus:
    listening: bool
    port: int


@dataclass(frozen=True, slots=True)
class ShardOverview:
    shard: str
    index: int
    primary: ServerStatus
    replica: ServerStatus
    pgbouncer: PgBouncerStatus
    replication_lag_seconds: float | None
    replication_lag_bytes: int | None
    users: int | None
    share: float | None
    """This shard's part of all users counted now (None when a count is missing)."""
    ring_share: float
    """The part of the key space the ring gives this shard."""
    relay: RelayBacklog | None


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    epoch: int
    taken_at: float
    """Unix time of the readings."""
    total_users: int
    shards: list[ShardOverview]
    resharding: dict[str, Any] | None
    """The running or last resharding workflow: phase, per-phase findings, copy progress
    (as `messenger shards status --json` reports it, without DSNs); None when there is none."""


ReshardStatus = Callable[[], Awaitable[dict[str, Any] | None]]


async def _no_resharding() -> None:
    return None


class ClusterOverview:
    def __init__(
        self, router: ShardRouter, *, resharding: ReshardStatus = _no_resharding, max_age_s: float = 1.0
    ) -> None:
        self._router = router
        self._resharding = resharding
        self._readings = ClusterReadings(router)
        self._max_age_s = max_age_s
        self._last: tuple[float, ClusterSnapshot] | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self) -> ClusterSnapshot:
        async with self._lock:  # concurrent pollers share one reading
            if self._last is not None and time.monotonic() - self._last[0] < self._max_age_s:
                return self._last[1]
            snapshot = await self._take()
            self._last = (time.monotonic(), snapshot)
            return snapshot

    async def _take(self) -> ClusterSnapshot:
        router = self._router
        ring_shares = router.ring.shares()  # per snapshot: the ring changes with the epoch
        shards, resharding = await asyncio.gather(
            asyncio.gather(*(self._shard(s, ring_shares.get(s, 0.0)) for s in router.shard_indexes)),
            self._resharding(),
        )
        total = sum(s.users or 0 for s in shards)
        complete = all(s.users is not None for s in shards)
        with_share = [
            replace(s, share=(s.users / total) if complete and total and s.users is not None else None)
            for s in shards
        ]
        return ClusterSnapshot(router.topology.epoch, time.time(), total, with_share, resharding)

    async def _shard(self, shard: int, ring_share: float) -> ShardOverview:
        router, readings = self._router, self._readings
        config = router.topology.shard(shard)
        bouncer = endpoint(config.rw_dsn)
        reads = asyncio.gather(
            readings.users(shard),
            readings.relay_backlog(shard),
            readings.client_connections(shard, "primary"),
            readings.client_connections(shard, "replica"),
        )
        probes = asyncio.gather(
            listening(endpoint(config.primary_dsn)),
            listening(endpoint(config.replica_dsn)),
            listening(bouncer),
        )
        (users, relay, primary_conns, replica_conns), (primary_listens, replica_listens, bouncer_listens) = (
            await asyncio.gather(reads, probes)
        )
        state = router.state(shard)
        return ShardOverview(
            shard=router.shard_name(shard),
            index=shard,
            primary=self._server(shard, "primary", primary_listens, state.primary_up, primary_conns),
            replica=self._server(shard, "replica", replica_listens, state.replica_up, replica_conns),
            pgbouncer=PgBouncerStatus(bouncer_listens, bouncer.port),
            replication_lag_seconds=state.lag_seconds,
            replication_lag_bytes=state.lag_bytes,
            users=users,
            share=None,
            ring_share=ring_share,
            relay=relay,
        )

    def _server(self, shard: int, role: Role, listens: bool, monitor_up: bool, connections: int | None) -> ServerStatus:
        router = self._router
        stats = router.pool_stats(shard, role)
        return ServerStatus(
            listening=listens,
            serving=monitor_up and not router.breaker_open(shard, role),
            client_connections=connections,
            pool=PoolUse(stats.get("in_use", 0), stats.get("idle", 0), stats.get("waiting", 0)),
        )

