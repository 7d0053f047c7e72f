"""The shard router: which shard holds a key, and which server of it answers a call.

This module is policy; the machinery of a call to one server (permits, breaker, deadline,
pool) is endpoint.py, the replica monitor health.py, the text sent statements.py.

- Writes go to the shard's primary. Each write is one round trip that also commits and
  returns the primary's WAL position after the commit; that position becomes a freshness
  marker for the written key (freshness.py) and a consistency token for the client.
- Reads go to the shard's replica, unless (a) the replica is down or further behind than
  `max_replica_lag_s` (health.py), (b) the key was written recently and the replica has not
  replayed that write yet (checked in the same round trip as the row fetch), or (c) the
  markers cannot be read (Redis down). Then the primary answers; the client sees no
  difference.
- Stores call it key first (`read_key`, `write_key`, `transaction_for`): the key picks the
  shard and is the freshness marker's name. Work that is per shard by nature (scatter, the
  relay, audits) calls it shard first (`read`, `write`, `transaction`).
- Every statement and transaction has a name (`name="get_user"`) for metrics and logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from messenger.domain.errors import ShardUnavailable
from messenger.metrics import Metrics
from messenger.settings import Settings
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.endpoint import AfterCommit, Endpoint, Params, Rows, ShardEndpoints
from messenger.storage.shards.freshness import FreshnessMarkers, FreshnessUnknown, lsn_to_int
from messenger.storage.shards.health import ReplicaMonitor, ReplicaState
from messenger.storage.shards.pools import Role, ShardPools
from messenger.storage.shards.ring import HashRing
from messenger.storage.shards.statements import SCHEMA_VERSION_SQL, Statements
from messenger.storage.shards.transactions import UNNAMED, Key, canonical_key
from messenger.topology import Topology

__all__ = ["Key", "Params", "ReplicaState", "Rows", "ShardRouter", "WriteResult", "canonical_key"]

@dataclass(frozen=True, slots=True)
class WriteResult:
    rows: Rows
    token: str | None
    """Consistency token: `epoch.shard.lsn`; None when nothing changed."""


class ShardRouter:
    def __init__(
        self,
        topology: Topology,
        pools: ShardPools,
        freshness: FreshnessMarkers,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.topology = topology
        self.ring = HashRing.for_topology(topology)
        self._pools = pools
        self._freshness = freshness
        self._settings = settings
        self._metrics = metrics
        self._statements = Statements(settings.statement_timeout_ms)
        timeouts: dict[Role, float] = {"primary": settings.primary_timeout, "replica": settings.replica_timeout}

        def endpoint(index: int, name: str, role: Role) -> Endpoint:
            return Endpoint(
                index, name, role, pools.get(index, role),
                breaker=CircuitBreaker(
                    f"{name}-{role}",
                    failure_threshold=settings.breaker_failures,
                    reset_after=settings.breaker_reset_after,
                ),
                timeout=timeouts[role],
                capacity_timeout=settings.capacity_timeout_s,
                begin_sql=self._statements.begin,
                metrics=metrics,
            )

        self._shards = {
            s.index: ShardEndpoints(
                s.index, s.name, endpoint(s.index, s.name, "primary"), endpoint(s.index, s.name, "replica")
            )
            for s in topology.shards
        }
        self._monitor = ReplicaMonitor(
            self._shards, self._statements, metrics, interval_s=settings.monitor_interval_s
        )

    # -- placement -----------------------------------------------------------------------

    @property
    def shard_indexes(self) -> tuple[int, ...]:
        return self.topology.shard_indexes

    def shard_for(self, key: Key) -> int:
        return self.ring.shard_for(canonical_key(key))

    def shard_name(self, shard: int) -> str:
        return self._shards[shard].name

    # -- key first: what stores call -----------------------------------------------------

    async def read_key(
        self, key: Key, sql: str, params: Params, *, name: str, token: str | None = None
    ) -> Rows:
        """Rows of one query on the key's shard, read-your-writes for that key."""
        text = canonical_key(key)
        return await self.read(self.ring.shard_for(text), sql, params, name=name, key=text, token=token)

    async def recently_written(self, key: Key) -> bool:
        """Whether the key has a freshness marker, or whether that cannot be known now (a
        cache must not answer for such a key: the write may not have reached it yet)."""
        try:
            return await self._freshness.get(canonical_key(key)) is not None
        except FreshnessUnknown:
            return True

    async def write_key(self, key: Key, sql: str, params: Params, *, name: str) -> WriteResult:
        """One data-changing statement on the key's shard; the key gets a freshness marker."""
        text = canonical_key(key)
        return await self.write(self.ring.shard_for(text), sql, params, name=name, key=text)

    def transaction_for(
        self, key: Key, *, name: str, marks: Sequence[Key] = ()
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A transaction on the key's shard's primary (see `transaction`)."""
        return self.transaction(self.shard_for(key), name=name, marks=marks)

    # -- writes --------------------------------------------------------------------------

    async def write(
        self, shard: int, sql: str, params: Params, *, key: str | None, name: str = UNNAMED
    ) -> WriteResult:
        """Run one data-changing statement (with RETURNING) on the shard's primary and commit.

        When it returned rows, the key gets a freshness marker at the commit's WAL position.
        """
        sets = await self._shards[shard].primary.execute(self._statements.write(sql), params, name=name)
        rows, lsn_text = sets[0], sets[-1][0][0]
        if not rows:
            return WriteResult(rows, None)
        lsn = lsn_to_int(lsn_text)
        if key is not None:
            await self._freshness.mark(key, lsn)
        return WriteResult(rows, f"{self.topology.epoch}.{shard}.{lsn:x}")

    @asynccontextmanager
    async def transaction(
        self, shard: int, *, name: str = UNNAMED, marks: Sequence[Key] = ()
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """A transaction on the shard's primary for use cases of several statements.

        Same deadline, statement timeout and breaker as single writes (endpoint.py). After the
        commit, each key in `marks` gets a freshness marker so reads of it see this write.
        """
        after_commit = self._marking([canonical_key(k) for k in marks]) if marks else None
        async with self._shards[shard].primary.transaction(name=name, after_commit=after_commit) as conn:
            yield conn

    def _marking(self, keys: list[str]) -> AfterCommit:
        async def mark(position: str) -> None:
            lsn = lsn_to_int(position)
            for key in keys:
                await self._freshness.mark(key, lsn)

        return mark

    # -- reads ---------------------------------------------------------------------------

    async def read(
        self,
        shard: int,
        sql: str,
        params: Params,
        *,
        key: str | None = None,
        token: str | None = None,
        name: str = UNNAMED,
    ) -> Rows:
        """Rows of one query, from the replica when that cannot break read-your-writes."""
        servers = self._shards[shard]
        replica = servers.replica
        state = self._monitor.state(shard)
        if replica.tripped or not state.replica_up:
            return await self._read_primary(servers, sql, params, name, "replica_down")
        lag = state.lag_seconds
        if lag is not None and lag > self._settings.max_replica_lag_s:
            return await self._read_primary(servers, sql, params, name, "replica_lagging", fallback=True)

        need = self._token_position(token, shard)
        if key is not None and self._settings.read_your_writes:
            try:
                marker = await self._freshness.get(key)
            except FreshnessUnknown:
                return await self._read_primary(servers, sql, params, name, "markers_unknown")
            if marker is not None and (need is None or marker > need):
                need = marker
        try:
            if need is None:
                sets = await replica.execute(self._statements.read(sql), params, name=name)
                self._routed(servers, "replica", "plain")
                return sets[-1]
            sets = await replica.execute(self._statements.checked(sql), params, name=name)
        except ShardUnavailable:
            return await self._read_primary(servers, sql, params, name, "replica_failed")
        replayed = sets[0][0][0]
        if replayed is None or lsn_to_int(replayed) >= need:  # None: not a standby after all
            self._routed(servers, "replica", "caught_up")
            return sets[-1]
        return await self._read_primary(servers, sql, params, name, "replica_behind_write")

    async def read_everywhere(self, sql: str, params: Params, *, name: str = UNNAMED) -> list[Rows]:
        """The same query on every shard in parallel (scatter), rows per shard in shard order.

        If any shard cannot answer, raise ShardUnavailable naming it (and listing all that
        failed): a partial answer would look complete to the caller.
        """
        results = await asyncio.gather(
            *(self.read(shard, sql, params, name=name) for shard in self.shard_indexes),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, ShardUnavailable)]
        if failed:
            first = failed[0]
            first.details["unavailable_shards"] = sorted({f.shard for f in failed})
            raise first
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    async def _read_primary(
        self, servers: ShardEndpoints, sql: str, params: Params, name: str, reason: str,
        *, fallback: bool = False,
    ) -> Rows:
        try:
            sets = await servers.primary.execute(self._statements.read(sql), params, name=name)
        except ShardUnavailable:
            if not fallback:
                raise
            # The replica is only slow, and slightly stale beats unavailable when the primary
            # is gone; no write can be newer than what it had replayed since none can commit.
            sets = await servers.replica.execute(self._statements.read(sql), params, name=name)
            self._routed(servers, "replica", "primary_down")
            return sets[-1]
        self._routed(servers, "primary", reason)
        return sets[-1]

    def _routed(self, servers: ShardEndpoints, served_by: Role, reason: str) -> None:
        self._metrics.child(self._metrics.read_routing, servers.name, served_by, reason).inc()

    def _token_position(self, token: str | None, shard: int) -> int | None:
        if not token:
            return None
        try:
            epoch, token_shard, lsn = token.split(".")
            if int(epoch) == self.topology.epoch and int(token_shard) == shard:
                return int(lsn, 16)
        except ValueError:
            pass
        return None  # a token for another shard or epoch says nothing about this one

    # -- health ---------------------------------------------------------------------------

    async def schema_version(self, shard: int) -> str | None:
        """The primary's migration revision (readiness checks; waits for capacity like any call)."""
        rows = await self.probe(shard, "primary", SCHEMA_VERSION_SQL, queue=True, name="schema_version")
        return rows[0][0] if rows else None

    async def ping(self, shard: int, role: Role) -> None:
        """Raise unless the server answers (readiness checks; waits for capacity like any call)."""
        await self.probe(shard, role, "SELECT 1", queue=True, name="ping")

    async def probe(
        self, shard: int, role: Role, sql: str, *, queue: bool = False, name: str = "probe"
    ) -> Rows:
        """One query on a given server regardless of its breaker (health checks).

        With `queue`, wait for a free connection like any call (a readiness check under load
        must not report a busy shard as down); without it, raise ShardBusy at once.
        """
        endpoint = self.endpoint(shard, role)
        sets = await endpoint.execute(self._statements.read(sql), (), name=name, probe=True, queue=queue)
        return sets[-1]

    def state(self, shard: int) -> ReplicaState:
        return self._monitor.state(shard)

    def endpoint(self, shard: int, role: Role) -> Endpoint:
        """The (shard, role)'s pool, permits and breaker."""
        return self._shards[shard].role(role)

    def breaker_open(self, shard: int, role: Role) -> bool:
        return self.endpoint(shard, role).tripped

    def pool_stats(self, shard: int, role: Role) -> dict[str, int]:
        endpoint = self.endpoint(shard, role)
        stats = endpoint.pool_stats()
        # Calls queue for permits here, in front of the pool (which then rarely has waiters).
        stats["waiting"] = stats.get("waiting", 0) + endpoint.capacity.waiting
        return stats

    async def check_shard(self, shard: int) -> ReplicaState:
        """Probe a shard's primary and replica once and update its state (health.py)."""
        return await self._monitor.check(shard)

    def start_monitor(self) -> None:
        self._monitor.start()

    async def stop_monitor(self) -> None:
        await self._monitor.stop()
