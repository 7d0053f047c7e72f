"""What the operational endpoints ask of the shards: readiness, per-shard stats, outbox backlog.

Everything here goes through the router's public health methods and the stores, so the ops
routes need no SQL and no storage import; a shard that cannot answer is reported as such
(`up: false`, `users: null`, a scrape error counted), never a failed answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from messenger.domain.errors import ShardUnavailable
from messenger.metrics import Metrics
from messenger.services.refreshed import Refreshed
from messenger.storage.relay.runner import read_backlog
from messenger.storage.shards.freshness import FreshnessMarkers
from messenger.storage.shards.pools import ROLES
from messenger.storage.shards.router import ShardRouter
from messenger.storage.users import UserStore


@dataclass(frozen=True, slots=True)
class ServerCheck:
    up: bool
    error: str | None = None
    """Why it is down, as a fixed code ("unreachable", "timeout", "error"): never the driver's
    text, which can name hosts, ports, users and server messages."""


@dataclass(frozen=True, slots=True)
class ShardReadiness:
    shard: str
    index: int
    primary: ServerCheck
    replica: ServerCheck
    schema_version: str | None
    schema_ok: bool
    """At the version this server was started against."""

    @property
    def ready(self) -> bool:
        return self.primary.up and self.replica.up and self.schema_ok


@dataclass(frozen=True, slots=True)
class Readiness:
    schema_version: str | None
    shards: list[ShardReadiness]
    redis_up: bool
    """Redis only makes reads cheaper (replica instead of primary); it is not required."""

    @property
    def ready(self) -> bool:
        return all(s.ready for s in self.shards)


@dataclass(frozen=True, slots=True)
class ShardStats:
    shard: str
    index: int
    users: int | None
    """None when the shard could not be counted."""
    share: float | None
    ring_share: float
    primary_up: bool
    replica_up: bool
    replication_lag_seconds: float | None
    replication_lag_bytes: int | None
    pool: dict[str, dict[str, int]]
    """This worker's pool usage per role."""


@dataclass(frozen=True, slots=True)
class ClusterStats:
    epoch: int
    total_users: int
    shards: list[ShardStats]


USER_COUNTS_MAX_AGE_S = 5.0
"""How stale the users-per-shard figures may be: they cost a count on every shard."""


class OpsService:
    def __init__(
        self,
        router: ShardRouter,
        freshness: FreshnessMarkers,
        users: UserStore,
        metrics: Metrics,
        *,
        schema_version: str | None,
    ) -> None:
        self._router = router
        self._freshness = freshness
        self._users = users
        self._metrics = metrics
        self._user_counts = Refreshed(self._count_users, USER_COUNTS_MAX_AGE_S)
        self.schema_version = schema_version
        """The migration head the shards were at when this process started."""

    async def readiness(self) -> Readiness:
        """Every shard's primary and replica answer now, at the expected schema version."""
        router = self._router
        checks = await asyncio.gather(*(self._check_shard(s) for s in router.shard_indexes))
        return Readiness(self.schema_version, list(checks), await self._freshness.ping())

    async def _check_shard(self, shard: int) -> ShardReadiness:
        router = self._router
        primary, replica = await asyncio.gather(
            router.schema_version(shard), router.ping(shard, "replica"), return_exceptions=True
        )
        version = None if isinstance(primary, BaseException) else primary
        expected = self.schema_version
        return ShardReadiness(
            shard=router.shard_name(shard),
            index=shard,
            primary=server_check(primary),
            replica=server_check(replica),
            schema_version=version,
            schema_ok=version is not None and (expected is None or version == expected),
        )

    async def cluster_stats(self) -> ClusterStats:
        """Per shard: users, their share of the total vs the ring's prediction, server health,
        replication lag and this worker's pool usage."""
        router = self._router
        predicted = router.ring.shares()
        counts = await self._user_counts.get()
        total = sum(c for c in counts if c is not None)
        shards = []
        for shard, users in zip(router.shard_indexes, counts, strict=True):
            state = router.state(shard)
            shards.append(ShardStats(
                shard=router.shard_name(shard),
                index=shard,
                users=users,
                share=(users / total) if users is not None and total else None,
                ring_share=predicted.get(shard, 0.0),
                primary_up=state.primary_up and not router.breaker_open(shard, "primary"),
                replica_up=state.replica_up and not router.breaker_open(shard, "replica"),
                replication_lag_seconds=state.lag_seconds,
                replication_lag_bytes=state.lag_bytes,
                pool={role: router.pool_stats(shard, role) for role in ROLES},
            ))
        return ClusterStats(router.topology.epoch, total, shards)

    async def _count_users(self) -> list[int | None]:
        return await asyncio.gather(*(self._count(s) for s in self._router.shard_indexes))

    async def _count(self, shard: int) -> int | None:
        try:
            return await self._users.count_on_shard(shard)
        except ShardUnavailable:
            return None

    async def refresh_outbox_gauges(self) -> None:
        """Set the outbox gauges from every shard; a shard that cannot answer counts a scrape
        error and keeps its last values."""
        router, metrics = self._router, self._metrics
        results = await asyncio.gather(
            *(read_backlog(router, shard) for shard in router.shard_indexes),
            return_exceptions=True,
        )
        for shard, result in zip(router.shard_indexes, results, strict=True):
            name = router.shard_name(shard)
            if isinstance(result, BaseException):
                if not isinstance(result, ShardUnavailable):
                    raise result
                metrics.child(metrics.outbox_scrape_errors, name).inc()
                continue
            metrics.child(metrics.outbox_pending, name).set(result.pending)
            metrics.child(metrics.outbox_oldest_age, name).set(result.oldest_age_s)
            metrics.child(metrics.outbox_dead, name).set(result.dead)


def server_check(outcome: object) -> ServerCheck:
    """A server's answer, or the exception instead of it, as a check with a fixed reason."""
    if not isinstance(outcome, BaseException):
        return ServerCheck(True)
    if isinstance(outcome, TimeoutError):
        return ServerCheck(False, "timeout")
    if isinstance(outcome, ShardUnavailable):
        return ServerCheck(False, "unreachable")
    return ServerCheck(False, "error")
