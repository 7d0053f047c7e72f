"""The shard router: which shard holds a key, and which server of it answers a call.

- Writes go to the shard's primary. Each write is one round trip that also commits and
  returns the primary's WAL position after the commit; that position becomes a freshness
  marker for the written key (freshness.py) and a consistency token for the client.
- Reads go to the shard's replica, unless (a) the replica is down or further behind than
  `max_replica_lag_s` (per-shard monitor below), (b) the key was written recently and the
  replica has not replayed that write yet (checked in the same round trip as the row fetch),
  or (c) the markers cannot be read (Redis down). Then the primary answers; the client sees
  no difference.
- A call first waits for a permit of its pool (capacity.py): that wait is overload, has its
  own long bound (`capacity_timeout_s`, then 503 shard_busy) and never counts as a failure.
  Holding a permit, the call has a deadline for talking to the server (getting its pooled
  connection, which may mean connecting, plus the statement), and a server-side
  statement_timeout. Only failures of that part (timeouts, refused or broken connections,
  server errors) count on a per (shard, role) circuit breaker, so a dead server costs one
  timeout, not one per request; when the breaker opens, calls queued for its permits fail at
  once. A monitor per shard probes both servers a few times a second, which closes the
  breakers again as soon as a server is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from messenger.domain.errors import CommitUncertain, ShardBusy, ShardUnavailable
from messenger.metrics import Metrics
from messenger.settings import Settings
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.capacity import Capacity, CapacityTimeout
from messenger.storage.shards.freshness import FreshnessMarkers, FreshnessUnknown, lsn_to_int
from messenger.storage.shards.pools import ROLES, Role, ShardPools
from messenger.storage.shards.ring import HashRing
from messenger.topology import Topology

log = logging.getLogger(__name__)

Rows = list[tuple[Any, ...]]
Params = Sequence[Any] | Mapping[str, Any]

PRIMARY_POSITION_SQL = "SELECT pg_current_wal_lsn()::text"
REPLICA_POSITION_SQL = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
REPLAY_POSITION_SQL = "SELECT pg_last_wal_replay_lsn()::text"
SCHEMA_VERSION_SQL = "SELECT version_num FROM alembic_version"

_FAILURES = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError, OSError)
"""Errors that mean the server (or PgBouncer in front of it) did not answer properly: they
count against the breaker and become ShardUnavailable. Anything else is a bug or a constraint
violation and propagates as is."""


@dataclass(frozen=True, slots=True)
class Written:
    rows: Rows
    token: str | None
    """Consistency token: `epoch.shard.lsn`; None when nothing changed."""


@dataclass(slots=True)
class ReplicaState:
    """What the monitor last saw of a shard; lag is None when it cannot be computed."""

    primary_up: bool = True
    replica_up: bool = True
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    checked_at: float | None = None
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))


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
        self.ring = HashRing(topology.shard_indexes)
        self._pools = pools
        self._freshness = freshness
        self._settings = settings
        self._metrics = metrics
        self._names = {s.index: s.name for s in topology.shards}
        self._timeouts: dict[Role, float] = {
            "primary": settings.primary_timeout,
            "replica": settings.replica_timeout,
        }
        self._breakers = {
            (s.index, role): CircuitBreaker(
                f"{s.name}-{role}",
                failure_threshold=settings.breaker_failures,
                reset_after=settings.breaker_reset_after,
            )
            for s in topology.shards
            for role in ROLES
        }
        # One permit per pooled connection: a call holding one never waits for the pool.
        self._capacity = {
            (s.index, role): Capacity(pools.get(s.index, role).max_size)
            for s in topology.shards
            for role in ROLES
        }
        self._state = {s.index: ReplicaState() for s in topology.shards}
        self._monitors: list[asyncio.Task[None]] = []
        self._set_timeout = f"SET LOCAL statement_timeout = {int(settings.statement_timeout_ms)}; "
        self._begin_sql = f"BEGIN; SET LOCAL statement_timeout = {int(settings.statement_timeout_ms)}"
        self._wrapped: dict[tuple[str, str], str] = {}
        self._abandoned: set[asyncio.Future[list[Rows]]] = set()
        self._checking: dict[tuple[int, Role], asyncio.Future[None]] = {}

    # -- placement -----------------------------------------------------------------------

    @property
    def shard_indexes(self) -> tuple[int, ...]:
        return self.topology.shard_indexes

    def shard_for(self, key: str) -> int:
        return self.ring.shard_for(key)

    def shard_name(self, shard: int) -> str:
        return self._names[shard]

    # -- writes --------------------------------------------------------------------------

    async def write(self, shard: int, sql: str, params: Params, *, key: str | None) -> Written:
        """Run one data-changing statement (with RETURNING) on the shard's primary and commit.

        When it returned rows, the key gets a freshness marker at the commit's WAL position.
        """
        # One round trip: statement, COMMIT of the implicit transaction, then the WAL position,
        # which is therefore at or after the commit record.
        wrapped = self._wrap("write", sql)
        sets = await self._execute(shard, "primary", wrapped, params)
        rows, lsn_text = sets[0], sets[-1][0][0]
        if not rows:
            return Written(rows, None)
        lsn = lsn_to_int(lsn_text)
        if key is not None:
            await self._freshness.mark(key, lsn)
        return Written(rows, f"{self.topology.epoch}.{shard}.{lsn:x}")

    # -- reads ---------------------------------------------------------------------------

    async def read(
        self, shard: int, sql: str, params: Params, *, key: str | None = None, token: str | None = None
    ) -> Rows:
        """Rows of one query, from the replica when that cannot break read-your-writes."""
        state = self._state[shard]
        if self._breakers[(shard, "replica")].tripped or not state.replica_up:
            return await self._read_primary(shard, sql, params, "replica_down")
        lag = state.lag_seconds
        if lag is not None and lag > self._settings.max_replica_lag_s:
            return await self._read_primary(shard, sql, params, "replica_lagging", fallback=True)

        need = self._token_position(token, shard)
        if key is not None and self._settings.read_your_writes:
            try:
                marker = await self._freshness.get(key)
            except FreshnessUnknown:
                return await self._read_primary(shard, sql, params, "markers_unknown")
            if marker is not None and (need is None or marker > need):
                need = marker
        try:
            if need is None:
                sets = await self._execute(shard, "replica", self._wrap("read", sql), params)
                self._metrics.child(self._metrics.read_routing, self._names[shard], "replica", "plain").inc()
                return sets[-1]
            sets = await self._execute(shard, "replica", self._wrap("checked", sql), params)
        except ShardUnavailable:
            return await self._read_primary(shard, sql, params, "replica_failed")
        replayed = sets[0][0][0]
        if replayed is None or lsn_to_int(replayed) >= need:  # None: not a standby after all
            self._metrics.child(self._metrics.read_routing, self._names[shard], "replica", "caught_up").inc()
            return sets[-1]
        return await self._read_primary(shard, sql, params, "replica_behind_write")

    @asynccontextmanager
    async def transaction(
        self, shard: int, *, marks: Sequence[str] = ()
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """A transaction on the shard's primary for use cases of several statements.

        Same deadline, statement timeout and breaker as single writes. Only getting a server
        (pool, PgBouncer, primary) can hang on a dead shard, so that part runs under the
        deadline; once BEGIN has answered, statement_timeout bounds the rest. After the
        commit, each key in `marks` gets a freshness marker so reads of it see this write.
        """
        name = self._names[shard]
        breaker = self._breakers[(shard, "primary")]
        capacity = await self._admit(shard, "primary", probe=False)
        pool = self._pools.get(shard, "primary")
        begin = asyncio.ensure_future(self._begin(pool))
        try:
            done, _ = await asyncio.wait((begin,), timeout=self._timeouts["primary"])
            if not done:
                begin.add_done_callback(lambda work: self._give_back(pool, work, capacity))
                raise TimeoutError
            conn = begin.result()
        except _FAILURES as exc:
            if begin.done():
                capacity.release()
            self._failed(shard, "primary", "begin")
            raise ShardUnavailable(name, "primary", _reason(exc)) from None
        except BaseException:  # our caller went away: the BEGIN may still bring a connection
            begin.add_done_callback(lambda work: self._give_back(pool, work, capacity))
            raise
        committing = False
        try:
            try:
                yield conn
                committing = True
                await conn.commit()
            except BaseException:
                with suppress(Exception):
                    await conn.rollback()
                raise
            if marks:
                cursor = await conn.execute(PRIMARY_POSITION_SQL)
                row = await cursor.fetchone()
                lsn = lsn_to_int(row[0])  # type: ignore[index]
                for key in marks:
                    await self._freshness.mark(key, lsn)
        except _FAILURES as exc:
            self._failed(shard, "primary", type(exc).__name__)
            if committing:  # the COMMIT was sent: it may have been applied
                raise CommitUncertain(name, _reason(exc)) from None
            raise ShardUnavailable(name, "primary", _reason(exc)) from None
        finally:
            try:
                await pool.putconn(conn)
            finally:
                capacity.release()
        breaker.record_success()

    def _give_back(
        self, pool: AsyncConnectionPool, begin: asyncio.Future[AsyncConnection[Any]], capacity: Capacity
    ) -> None:
        """A BEGIN that answered after its caller gave up: roll back, return the connection
        and then its permit."""
        if begin.cancelled() or begin.exception() is not None:
            capacity.release()
            return
        conn = begin.result()

        async def give_back() -> None:
            try:
                with suppress(Exception):
                    await conn.rollback()
                await pool.putconn(conn)
            finally:
                capacity.release()

        task = asyncio.ensure_future(give_back())
        self._abandoned.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._abandoned.discard)

    async def _begin(self, pool: AsyncConnectionPool) -> AsyncConnection[Any]:
        conn = await pool.getconn()
        try:
            await conn.execute(self._begin_sql)
        except BaseException:
            await pool.putconn(conn)
            raise
        return conn

    async def read_everywhere(self, sql: str, params: Params) -> list[Rows]:
        """The same query on every shard in parallel (scatter), rows per shard in shard order.

        If any shard cannot answer, raise ShardUnavailable naming it (and listing all that
        failed): a partial answer would look complete to the caller.
        """
        results = await asyncio.gather(
            *(self.read(shard, sql, params) for shard in self.shard_indexes), return_exceptions=True
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
        self, shard: int, sql: str, params: Params, reason: str, *, fallback: bool = False
    ) -> Rows:
        try:
            sets = await self._execute(shard, "primary", self._wrap("read", sql), params)
        except ShardUnavailable:
            if not fallback:
                raise
            # The replica is only slow, and slightly stale beats unavailable when the primary
            # is gone; no write can be newer than what it had replayed since none can commit.
            sets = await self._execute(shard, "replica", self._wrap("read", sql), params)
            self._metrics.child(self._metrics.read_routing, self._names[shard], "replica", "primary_down").inc()
            return sets[-1]
        self._metrics.child(self._metrics.read_routing, self._names[shard], "primary", reason).inc()
        return sets[-1]

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

    def _wrap(self, kind: str, sql: str) -> str:
        wrapped = self._wrapped.get((kind, sql))
        if wrapped is None:
            if kind == "write":
                wrapped = f"{self._set_timeout}{sql}; COMMIT; {PRIMARY_POSITION_SQL}"
            elif kind == "checked":
                wrapped = f"{self._set_timeout}{REPLAY_POSITION_SQL}; {sql}"
            else:
                wrapped = f"{self._set_timeout}{sql}"
            self._wrapped[(kind, sql)] = wrapped
        return wrapped

    # -- the one place that talks to a pool -----------------------------------------------

    async def _execute(
        self, shard: int, role: Role, sql: str, params: Params, *, probe: bool = False,
        queue: bool = True,
    ) -> list[Rows]:
        """Run `sql` (possibly several statements) and return the rows of each result that has
        any columns. Probes bypass an open breaker; every outcome is recorded on it."""
        breaker = self._breakers[(shard, role)]
        name = self._names[shard]
        capacity = await self._admit(shard, role, probe=probe, queue=queue)
        started = time.perf_counter()
        # The deadline is enforced outside the query's task: cancelling a psycopg query makes
        # it send a cancel request and wait up to 10 s for the server to confirm, which a dead
        # server never does. So on timeout the task is left to clean up (its connection is
        # then discarded) and the caller gets its answer now. The permit goes back only when
        # the task is over: until then its connection is not free.
        work = asyncio.ensure_future(self._run(shard, role, sql, params))
        work.add_done_callback(lambda _: capacity.release())
        try:
            done, _ = await asyncio.wait((work,), timeout=self._timeouts[role])
            if not done:
                self._abandon(work)
                raise TimeoutError
            sets = work.result()
        except _FAILURES as exc:
            self._failed(shard, role, "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__)
            raise ShardUnavailable(name, role, _reason(exc)) from None
        except BaseException:
            # Not the server's fault (a bug, a constraint, a cancelled request): the server
            # answered or may have, so the breaker only must not stay half-open forever.
            self._abandon(work)
            breaker.record_success()
            raise
        breaker.record_success()
        self._metrics.child(self._metrics.query_seconds, name, role).observe(time.perf_counter() - started)
        return sets

    async def _admit(self, shard: int, role: Role, *, probe: bool, queue: bool = True) -> Capacity:
        """Wait for a permit of the (shard, role) pool, then for the breaker's consent.

        The breaker is asked only once a permit is held, so that in its half-open state the
        one probe it lets through is a call that really goes to the server. Probes bypass the
        breaker; the monitor's do not queue either (`queue=False`): a pool with every
        connection busy is answering, and the monitor keeps what it knew.
        """
        breaker = self._breakers[(shard, role)]
        name = self._names[shard]
        capacity = self._capacity[(shard, role)]
        if not queue:
            if not capacity.try_acquire():
                raise ShardBusy(name, role, 0)
            return capacity
        if not probe and breaker.is_open:
            self._metrics.child(self._metrics.query_errors, name, role, "circuit_open").inc()
            raise ShardUnavailable(name, role, "circuit open after recent failures")
        try:
            await capacity.acquire(self._settings.capacity_timeout_s)
        except CapacityTimeout:
            self._metrics.child(self._metrics.query_errors, name, role, "busy").inc()
            raise ShardBusy(name, role, self._settings.capacity_timeout_s) from None
        if not probe and not breaker.allow():
            capacity.release()
            self._metrics.child(self._metrics.query_errors, name, role, "circuit_open").inc()
            raise ShardUnavailable(name, role, "circuit open after recent failures")
        return capacity

    def _failed(self, shard: int, role: Role, kind: str) -> None:
        """Record a server-side failure; if it opened the breaker, fail the calls queued for
        this pool now rather than after they waited for connections stuck on a dead server."""
        breaker = self._breakers[(shard, role)]
        breaker.record_failure()
        self._metrics.child(self._metrics.query_errors, self._names[shard], role, kind).inc()
        if breaker.tripped:
            name = self._names[shard]
            self._capacity[(shard, role)].reject_waiting(
                lambda: ShardUnavailable(name, role, "circuit open after recent failures")
            )

    async def _run(self, shard: int, role: Role, sql: str, params: Params) -> list[Rows]:
        async with self._pools.get(shard, role).connection() as conn:
            try:
                cur = conn.cursor()
                await cur.execute(sql, params)
                sets: list[Rows] = []
                while True:
                    if cur.description is not None:
                        sets.append(await cur.fetchall())
                    if not cur.nextset():
                        return sets
            except psycopg.OperationalError:
                if conn.broken:  # the socket died: its idle siblings probably did too
                    self._check_pool(shard, role)
                raise

    def _check_pool(self, shard: int, role: Role) -> None:
        """After a connection broke (PgBouncer restarted, say), test the pool's idle
        connections in the background and drop the dead ones, so that requests do not meet
        them one by one. One check per pool at a time."""
        if (shard, role) in self._checking:
            return
        task = asyncio.ensure_future(self._pools.get(shard, role).check())
        self._checking[(shard, role)] = task

        def done(finished: asyncio.Future[None]) -> None:
            self._checking.pop((shard, role), None)
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("checking the %s %s pool failed", self._names[shard], role)

        task.add_done_callback(done)

    def _abandon(self, work: asyncio.Future[list[Rows]]) -> None:
        """Cancel a call nobody waits for any more, keeping it referenced until it is done."""
        if work.done():
            if not work.cancelled():
                work.exception()  # retrieved: no "exception never retrieved" noise
            return
        work.cancel()
        self._abandoned.add(work)
        work.add_done_callback(self._forget)

    def _forget(self, work: asyncio.Future[list[Rows]]) -> None:
        self._abandoned.discard(work)
        if not work.cancelled():
            work.exception()

    # -- health ---------------------------------------------------------------------------

    async def schema_version(self, shard: int) -> str | None:
        """The primary's migration revision (readiness checks; waits for capacity like any call)."""
        rows = await self.probe(shard, "primary", SCHEMA_VERSION_SQL, queue=True)
        return rows[0][0] if rows else None

    async def ping(self, shard: int, role: Role) -> None:
        """Raise unless the server answers (readiness checks; waits for capacity like any call)."""
        await self.probe(shard, role, "SELECT 1", queue=True)

    async def probe(self, shard: int, role: Role, sql: str, *, queue: bool = False) -> Rows:
        """One query on a given server regardless of its breaker (health checks).

        With `queue`, wait for a free connection like any call (a readiness check under load
        must not report a busy shard as down); without it, raise ShardBusy at once.
        """
        sets = await self._execute(
            shard, role, self._wrap("read", sql), (), probe=True, queue=queue
        )
        return sets[-1]

    def state(self, shard: int) -> ReplicaState:
        return self._state[shard]

    def breaker_open(self, shard: int, role: Role) -> bool:
        return self._breakers[(shard, role)].tripped

    def pool_stats(self, shard: int, role: Role) -> dict[str, int]:
        stats = self._pools.stats(shard, role)
        # Calls queue for permits here, in front of the pool (which then rarely has waiters).
        stats["waiting"] = stats.get("waiting", 0) + self._capacity[(shard, role)].waiting
        return stats

    def start_monitor(self) -> None:
        for shard in self.shard_indexes:
            task = asyncio.create_task(self._monitor(shard), name=f"replica-monitor-{shard}")
            self._monitors.append(task)

    async def stop_monitor(self) -> None:
        for task in self._monitors:
            task.cancel()
        await asyncio.gather(*self._monitors, return_exceptions=True)
        self._monitors.clear()

    async def _monitor(self, shard: int) -> None:
        while True:
            try:
                await self.check_shard(shard)
            except Exception:  # the monitor must outlive anything one check can raise
                log.exception("replica monitor of %s failed", self._names[shard])
            await asyncio.sleep(self._settings.monitor_interval_s)

    async def check_shard(self, shard: int) -> ReplicaState:
        """Probe a shard's primary and replica once and update its state: reachability (which
        also closes their breakers when they answer) and the replica's lag."""
        primary, replica = await asyncio.gather(
            self.probe(shard, "primary", PRIMARY_POSITION_SQL, queue=False),
            self.probe(shard, "replica", REPLICA_POSITION_SQL, queue=False),
            return_exceptions=True,
        )
        now = time.monotonic()
        state = self._state[shard]
        if isinstance(primary, ShardBusy) or isinstance(replica, ShardBusy):
            # Every connection of a pool is busy, so its server answers; nothing new is known.
            return state
        state.checked_at = now
        state.primary_up = not isinstance(primary, BaseException)
        state.replica_up = not isinstance(replica, BaseException)
        if not state.primary_up:
            # Without the primary's position the lag is unknown; the replica is all there is.
            state.samples.clear()
            state.lag_seconds = state.lag_bytes = None
        else:
            state.samples.append((now, lsn_to_int(primary[0][0])))  # type: ignore[index]
        if state.primary_up and state.replica_up:
            in_recovery, replayed_text = replica[0]  # type: ignore[index]
            if not in_recovery or replayed_text is None:
                state.samples.clear()
                state.lag_seconds, state.lag_bytes = 0.0, 0
            else:
                replayed = lsn_to_int(replayed_text)
                # Lag in time: how long ago the primary was at a position the replica has
                # still not replayed (0 if it has replayed everything sampled).
                while state.samples and state.samples[0][1] <= replayed:
                    state.samples.popleft()
                state.lag_seconds = now - state.samples[0][0] if state.samples else 0.0
                state.lag_bytes = max(0, lsn_to_int(primary[0][0]) - replayed)  # type: ignore[index]
        elif not state.replica_up:
            state.lag_seconds = state.lag_bytes = None
        name = self._names[shard]
        if state.lag_seconds is not None:
            self._metrics.replica_lag_seconds.labels(name).set(state.lag_seconds)
        for role in ROLES:
            for key, value in self._pools.stats(shard, role).items():
                self._metrics.pool_connections.labels(name, role, key).set(value)
        return state


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
