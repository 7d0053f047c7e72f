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
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from messenger.domain.errors import RangeMoved, ShardUnavailable
from messenger.metrics import Metrics
from messenger.settings import Settings
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.endpoint import (
    AfterCommit,
    Endpoint,
    Params,
    Rows,
    ShardEndpoints,
    Statement,
)
from messenger.storage.shards.fencing import NOT_OWNED, fence_state, frozen_waits
from messenger.storage.shards.freshness import FreshnessMarkers, FreshnessUnknown, lsn_to_int
from messenger.storage.shards.health import ReplicaMonitor, ReplicaState
from messenger.storage.shards.pools import Role, ShardPools
from messenger.storage.shards.ring import HashRing
from messenger.storage.shards.statements import SCHEMA_VERSION_SQL, Statements
from messenger.storage.shards.transactions import UNNAMED, Key, canonical_key
from messenger.topology import ShardConfig, Topology, TopologyError, load_topology

log = logging.getLogger(__name__)

RETIRE_GRACE_S = 5.0
"""How long the pools of a shard that left the topology stay open for calls already on them."""
RETIRE_MIN_S = 1.0
"""How long they stay open at least: a call may have picked the shard and not reached its pool
yet (it reads the key's freshness marker first), so no call in use does not mean none coming."""
OTHER_EPOCH = -1
"""`_token_position` of a token from another topology epoch: the read goes to the primary."""

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
        self._shards = {s.index: self._endpoints(s) for s in topology.shards}
        self._monitor = ReplicaMonitor(
            self._shards, self._statements, metrics, interval_s=settings.monitor_interval_s
        )
        self._adopting = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def _endpoints(self, shard: ShardConfig) -> ShardEndpoints:
        settings = self._settings
        timeouts: dict[Role, float] = {"primary": settings.primary_timeout, "replica": settings.replica_timeout}

        def endpoint(role: Role) -> Endpoint:
            return Endpoint(
                shard.index, shard.name, role, self._pools.get(shard.index, role),
                breaker=CircuitBreaker(
                    f"{shard.name}-{role}",
                    failure_threshold=settings.breaker_failures,
                    reset_after=settings.breaker_reset_after,
                ),
                timeout=timeouts[role],
                capacity_timeout=settings.capacity_timeout_s,
                begin_sql=self._statements.begin,
                metrics=self._metrics,
            )

        return ShardEndpoints(shard.index, shard.name, endpoint("primary"), endpoint("replica"))

    # -- topology epochs -------------------------------------------------------------------

    async def adopt(self, topology: Topology) -> bool:
        """Route by a newer topology from now on; False (and nothing changes) for the same or
        an older epoch.

        Pools of shards that are new (or whose servers changed) are opened first; then the
        ring, the topology and the shard map are swapped with no await in between, so every
        call sees one epoch or the other, never a mix. Unchanged shards keep their endpoints
        (pools, breakers, permits, replica state). Pools of shards that left are closed once
        the calls on them are over (RETIRE_GRACE_S at most).
        """
        async with self._adopting:
            current = self.topology
            if topology.epoch <= current.epoch:
                log.debug("topology epoch %d ignored: already at %d", topology.epoch, current.epoch)
                return False
            before = {s.index: s for s in current.shards}
            ring = HashRing.for_topology(topology)
            shards = dict(self._shards)
            retired: list[ShardEndpoints] = []
            displaced: list[AsyncConnectionPool] = []
            for shard in topology.shards:
                if before.get(shard.index) == shard:
                    continue
                displaced += self._pools.add(shard)
                await self._pools.open_shard(shard.index)
                if shard.index in shards:
                    retired.append(shards[shard.index])
                shards[shard.index] = self._endpoints(shard)
            wanted = set(topology.shard_indexes)
            for index in [i for i in shards if i not in wanted]:
                retired.append(shards.pop(index))
                displaced += self._pools.remove(index)
            # The swap: nothing below awaits.
            self.topology, self.ring, self._shards = topology, ring, shards
            self._monitor.adopt(shards)
            if retired or displaced:
                self._retire(retired, displaced)
        log.info(
            "adopted topology epoch %d (shards %s, was epoch %d)",
            topology.epoch, list(topology.shard_indexes), current.epoch,
        )
        return True

    async def reload_topology(self, seen_epoch: int | None = None) -> bool:
        """Load the topology file again and adopt it (a shard said this process is stale).

        `seen_epoch`: the epoch the caller routed by; if another call adopted a newer one
        meanwhile, nothing is read. A file that cannot be read keeps the current topology.
        """
        path = self.topology.path
        if path is None or (seen_epoch is not None and self.topology.epoch > seen_epoch):
            return seen_epoch is not None and self.topology.epoch > seen_epoch
        try:
            topology = load_topology(path)
        except TopologyError as exc:
            log.warning("cannot reload the topology: %s", exc)
            return False
        return await self.adopt(topology)

    def _retire(self, endpoints: list[ShardEndpoints], pools: list[AsyncConnectionPool]) -> None:
        async def retire() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + RETIRE_GRACE_S
            try:
                await asyncio.sleep(RETIRE_MIN_S)
                while loop.time() < deadline and any(e.capacity.in_use for s in endpoints for e in s):
                    await asyncio.sleep(0.05)
            finally:
                await asyncio.gather(*(pool.close(timeout=2.0) for pool in pools), return_exceptions=True)

        task = asyncio.create_task(retire(), name="retire-shard-pools")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # -- placement -----------------------------------------------------------------------

    @property
    def shard_indexes(self) -> tuple[int, ...]:
        return self.topology.shard_indexes

    def shard_for(self, key: Key) -> int:
        return self.ring.shard_for(canonical_key(key))

    def shard_name(self, shard: int) -> str:
        servers = self._shards.get(shard)
        return servers.name if servers is not None else f"shard {shard} (left the ring)"

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
        self, key: Key, *, name: str, marks: Sequence[Key] = (), first: Statement | None = None,
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A transaction on the key's shard's primary (see `transaction`)."""
        return self.transaction(self.shard_for(key), name=name, marks=marks, first=first)

    # -- writes --------------------------------------------------------------------------

    async def write(
        self, shard: int, sql: str, params: Params, *, key: str | None, name: str = UNNAMED
    ) -> WriteResult:
        """Run one data-changing statement (with RETURNING) on the shard's primary and commit.

        When it returned rows, the key gets a freshness marker at the commit's WAL position.
        """
        sets = await self._write_fenced(shard, self._statements.write(sql), params, key=key, name=name)
        shard = sets.pop()[0][0]  # the shard that took it (another one after MF001)
        rows, lsn_text = sets[0], sets[-1][0][0]
        if not rows:
            return WriteResult(rows, None)
        lsn = lsn_to_int(lsn_text)
        if key is not None:
            await self._freshness.mark(key, lsn)
        return WriteResult(rows, f"{self.topology.epoch}.{shard}.{lsn:x}")

    async def _write_fenced(
        self, shard: int, sql: str, params: Params, *, key: str | None, name: str
    ) -> list[Rows]:
        """Run a write, answering the fence (fencing.py): after MF001 reload the topology and
        send it once more to the shard the new ring names for `key`; after MF002 retry with a
        growing pause for up to 3 s. Neither counts on a breaker. The shard it ran on is
        appended as a last result set."""
        waits = None
        retried = False
        while True:
            servers = self._shards.get(shard)
            if servers is None:  # the shard left the topology since the caller picked it
                if key is None:
                    raise RangeMoved(f"shard {shard}")
                shard = self.ring.shard_for(key)
                continue
            epoch = self.topology.epoch
            try:
                sets = await servers.primary.execute(sql, params, name=name)
            except psycopg.Error as exc:
                state = fence_state(exc)
                if state is None:
                    raise
                if state == NOT_OWNED:
                    await self.reload_topology(epoch)
                    if retried or key is None:
                        raise RangeMoved(servers.name, "not owned by this shard") from None
                    retried = True
                    log.info("%s on %s: range not owned, retrying on epoch %d", name, servers.name, self.topology.epoch)
                    shard = self.ring.shard_for(key)
                    continue
                if waits is None:
                    waits = iter(frozen_waits())
                pause = next(waits, None)
                if pause is None:
                    raise RangeMoved(servers.name, "frozen for a shard move", frozen=True) from None
                await asyncio.sleep(pause)
                continue
            sets.append([(shard,)])
            return sets

    @asynccontextmanager
    async def transaction(
        self, shard: int, *, name: str = UNNAMED, marks: Sequence[Key] = (), first: Statement | None = None,
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """A transaction on the shard's primary for use cases of several statements.

        Same deadline, statement timeout and breaker as single writes (endpoint.py). After the
        commit, each key in `marks` gets a freshness marker so reads of it see this write.
        """
        after_commit = self._marking([canonical_key(k) for k in marks]) if marks else None
        servers = self._shards.get(shard)
        if servers is None:
            raise RangeMoved(f"shard {shard}")
        epoch = self.topology.epoch
        try:
            async with servers.primary.transaction(name=name, after_commit=after_commit, first=first) as conn:
                yield conn
        except psycopg.Error as exc:
            # The body cannot be replayed here: adopt what the fence says and raise; the store
            # method replays it (fencing.replayed_when_fenced), or the client retries.
            state = fence_state(exc)
            if state is None:
                raise
            if state == NOT_OWNED:
                await self.reload_topology(epoch)
                raise RangeMoved(servers.name, "not owned by this shard") from None
            raise RangeMoved(servers.name, "frozen for a shard move", frozen=True) from None

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
        servers = self._shards.get(shard)
        if servers is None:  # the shard left the topology since the caller picked it
            raise RangeMoved(f"shard {shard}")
        replica = servers.replica
        state = self._monitor.state(shard)
        if replica.tripped or not state.replica_up:
            return await self._read_primary(servers, sql, params, name, "replica_down")
        lag = state.lag_seconds
        if lag is not None and lag > self._settings.max_replica_lag_s:
            return await self._read_primary(servers, sql, params, name, "replica_lagging", fallback=True)

        need = self._token_position(token, shard)
        if need == OTHER_EPOCH:  # written before a reshard (or after one this process lags)
            return await self._read_primary(servers, sql, params, name, "token_other_epoch")
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
            if int(epoch) != self.topology.epoch:
                # Its shard may not own the key any more, and its position says nothing of
                # the shard that does: only the primary is sure to have the write.
                return OTHER_EPOCH
            if int(token_shard) == shard:
                return int(lsn, 16)
        except ValueError:
            pass
        return None  # a token for another shard says nothing about this one

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
        for task in list(self._retiring):
            task.cancel()  # its pools close at once
        await asyncio.gather(*self._retiring, return_exceptions=True)
