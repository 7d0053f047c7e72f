"""The replica monitor: a task per shard that probes its primary and replica a few times a
second, so the router knows which servers answer and how far each replica is behind.

A probe goes to the server regardless of its breaker, so a server that is back closes its
breaker at the next probe instead of waiting for a request to try it. Probes never queue for
the pool: a pool with every connection busy is answering, and the monitor keeps what it knew.

Lag is measured two ways: in bytes (the primary's WAL position minus the replica's replay
position) and in time (how long ago the primary was at a position the replica has still not
replayed, from the positions sampled at each probe). The router compares the time lag with
`max_replica_lag_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from messenger.domain.errors import ShardBusy
from messenger.metrics import Metrics
from messenger.storage.shards.endpoint import Endpoint, Rows, ShardEndpoints
from messenger.storage.shards.freshness import lsn_to_int
from messenger.storage.shards.statements import (
    PRIMARY_POSITION_SQL,
    REPLICA_POSITION_SQL,
    Statements,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplicaState:
    """What the monitor last saw of a shard; lag is None when it cannot be computed."""

    primary_up: bool = True
    replica_up: bool = True
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    checked_at: float | None = None
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))

    def record(
        self, now: float, primary: int | None, replica: tuple[bool, int | None] | None
    ) -> None:
        """One probe's outcome: the primary's WAL position (None: it did not answer) and the
        replica's (in recovery, replayed position) (None: it did not answer)."""
        self.checked_at = now
        self.primary_up = primary is not None
        self.replica_up = replica is not None
        if primary is None:
            # Without the primary's position the lag is unknown; the replica is all there is.
            self.samples.clear()
            self.lag_seconds = self.lag_bytes = None
        else:
            self.samples.append((now, primary))
        if primary is not None and replica is not None:
            in_recovery, replayed = replica
            if not in_recovery or replayed is None:  # not a standby (any more): nothing to lag
                self.samples.clear()
                self.lag_seconds, self.lag_bytes = 0.0, 0
            else:
                # Lag in time: how long ago the primary was at a position the replica has
                # still not replayed (0 if it has replayed everything sampled).
                while self.samples and self.samples[0][1] <= replayed:
                    self.samples.popleft()
                self.lag_seconds = now - self.samples[0][0] if self.samples else 0.0
                self.lag_bytes = max(0, primary - replayed)
        elif replica is None:
            self.lag_seconds = self.lag_bytes = None


class ReplicaMonitor:
    """Probes every shard's two endpoints and keeps a ReplicaState per shard."""

    def __init__(
        self,
        shards: Mapping[int, ShardEndpoints],
        statements: Statements,
        metrics: Metrics,
        *,
        interval_s: float,
    ) -> None:
        self._shards = shards
        self._metrics = metrics
        self._interval_s = interval_s
        self._primary_sql = statements.read(PRIMARY_POSITION_SQL)
        self._replica_sql = statements.read(REPLICA_POSITION_SQL)
        self._states = {index: ReplicaState() for index in shards}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._running = False

    def state(self, shard: int) -> ReplicaState:
        return self._states[shard]

    def start(self) -> None:
        self._running = True
        for shard in self._shards:
            self._start(shard)

    def _start(self, shard: int) -> None:
        self._tasks[shard] = asyncio.create_task(self._watch(shard), name=f"replica-monitor-{shard}")

    def adopt(self, shards: Mapping[int, ShardEndpoints]) -> None:
        """Watch another set of shards (a new topology epoch), without awaiting anything: a
        shard kept with the same endpoints keeps its state and task; a new one, or one whose
        endpoints changed, starts from a fresh state (up, lag unknown); one gone stops."""
        old = self._shards
        self._shards = shards
        for shard, servers in shards.items():
            if old.get(shard) is not servers:
                self._states[shard] = ReplicaState()
            if self._running and shard not in self._tasks:
                self._start(shard)
        for shard in [s for s in self._states if s not in shards]:
            del self._states[shard]
            task = self._tasks.pop(shard, None)
            if task is not None:
                task.cancel()

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _watch(self, shard: int) -> None:
        while True:
            try:
                await self.check(shard)
            except Exception:  # the monitor must outlive anything one check can raise
                log.exception("replica monitor of %s failed", self._shards[shard].name)
            await asyncio.sleep(self._interval_s)

    async def check(self, shard: int) -> ReplicaState:
        """Probe a shard's primary and replica once and update its state: reachability (which
        also closes their breakers when they answer) and the replica's lag."""
        servers = self._shards[shard]
        primary, replica = await asyncio.gather(
            self._probe(servers.primary, self._primary_sql, "monitor_primary"),
            self._probe(servers.replica, self._replica_sql, "monitor_replica"),
            return_exceptions=True,
        )
        state = self._states.get(shard)
        if state is None:  # the shard left the topology while it was probed
            return ReplicaState()
        if isinstance(primary, ShardBusy) or isinstance(replica, ShardBusy):
            # Every connection of a pool is busy, so its server answers; nothing new is known.
            return state
        replica_position: tuple[bool, int | None] | None = None
        if not isinstance(replica, BaseException):
            in_recovery, replayed = replica[0]
            replica_position = (bool(in_recovery), None if replayed is None else lsn_to_int(replayed))
        state.record(
            time.monotonic(),
            None if isinstance(primary, BaseException) else lsn_to_int(primary[0][0]),
            replica_position,
        )
        if state.lag_seconds is not None:
            self._metrics.replica_lag_seconds.labels(servers.name).set(state.lag_seconds)
        for endpoint in servers:
            for key, value in endpoint.pool_stats().items():
                self._metrics.pool_connections.labels(servers.name, endpoint.role, key).set(value)
        return state

    @staticmethod
    async def _probe(endpoint: Endpoint, sql: str, name: str) -> Rows:
        sets = await endpoint.execute(sql, (), name=name, probe=True, queue=False)
        return sets[-1]
