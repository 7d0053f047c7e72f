"""One server of one shard as this worker reaches it: the unit the router addresses.

An `Endpoint` is a (shard, role) together with everything a call to it needs: its pool, its
circuit breaker, its permits (capacity.py) and its deadline. Like Vitess's target and the
health object that carries its own connection, there are no parallel maps keyed by
(shard, role): the router picks an endpoint and the endpoint does the rest.

A call first waits for a permit of the pool: that wait is overload, has its own long bound
(`capacity_timeout`, then 503 shard_busy) and never counts as a failure. Holding a permit, the
call has a deadline for talking to the server (getting its pooled connection, which may mean
connecting, plus the statement), and the server-side statement_timeout. Only failures of that
part (timeouts, refused or broken connections, server errors) count on the breaker, so a dead
server costs one timeout, not one per request; when the breaker opens, calls queued for the
permits fail at once.

Every call is named (`name="get_user"`): the name is the `query` label of
db_query_duration_seconds and db_query_errors_total and appears in the failure log, so both
can say which statement is slow or failing. Names are literals in the code, so the label is
bounded. Its cost, measured with timeit (best of 5 × 200,000, Python 3.11, prometheus_client
0.26, a shared 2-core machine): the endpoint's per-name child lookup + observe takes 0.6-1.0 µs
a call, the same within noise as the shard/role-only `Metrics.child` lookup + observe it
replaced (0.8-1.0 µs); observe itself is most of it. A GET /api/v1/users/{id} costs about a
millisecond, so the label is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool

from messenger.domain.errors import CommitUncertain, ShardBusy, ShardUnavailable
from messenger.metrics import Metrics
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.capacity import Capacity, CapacityTimeout
from messenger.storage.shards.pools import Role, pool_stats
from messenger.storage.shards.statements import COMMIT_WITH_POSITION_SQL
from messenger.storage.shards.transactions import deferring_last_statement

log = logging.getLogger(__name__)

Rows = list[tuple[Any, ...]]
Params = Sequence[Any] | Mapping[str, Any]
Statement = tuple[str, Params]
"""A statement's text and parameters."""
AfterCommit = Callable[[str], Awaitable[None]]
"""Told the primary's WAL position (text) read in the commit's own round trip."""

FAILURES = (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError, OSError)
"""Errors that become ShardUnavailable. Those that mean the server (or PgBouncer in front of
it) did not answer properly also count against the breaker (`is_connection_failure`); anything
else is a bug or a constraint violation and propagates as is."""

CONNECTION_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "58")
"""SQLSTATE prefixes of a server that cannot serve: connection exceptions, insufficient
resources (too many connections), shutting down or starting up, system errors. Statement
timeouts (57014), deadlocks and serialization failures (40), lock timeouts (55P03) are the
statement's: a user who deletes an account with many followers, or two relays racing, must not
open the breaker of a shard that is answering fine."""


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc` says the server did not answer properly (and so counts on the breaker)."""
    if isinstance(exc, psycopg.Error) and not isinstance(exc, psycopg.InterfaceError):
        sqlstate = exc.sqlstate
        return sqlstate is None or sqlstate.startswith(CONNECTION_SQLSTATES)  # None: client side
    return isinstance(exc, FAILURES)

CIRCUIT_OPEN = "circuit open after recent failures"
BEGIN_RESULTS = 2
"""Results of the BEGIN text (BEGIN, SET LOCAL statement_timeout) before a folded first statement's."""
TRANSACTION_DEADLINE_FACTOR = 4
"""A transaction (BEGIN answered) may take this many call deadlines, commit included."""


class Endpoint:
    """A (shard, role): its pool, breaker, permits (one per pooled connection, so a call
    holding one never waits for the pool) and deadline. Used from one event loop only."""

    __slots__ = (
        "_abandoned", "_begin_sql", "_capacity_timeout", "_checking", "_durations", "_metrics",
        "breaker", "capacity", "label", "pool", "role", "shard", "shard_name", "timeout",
    )

    def __init__(
        self,
        shard: int,
        shard_name: str,
        role: Role,
        pool: AsyncConnectionPool,
        *,
        breaker: CircuitBreaker,
        timeout: float,
        capacity_timeout: float,
        begin_sql: str,
        metrics: Metrics,
    ) -> None:
        self.shard = shard
        self.shard_name = shard_name
        self.role: Role = role
        self.label = f"{shard_name}-{role}"
        self.pool = pool
        self.breaker = breaker
        self.capacity = Capacity(pool.max_size)
        self.timeout = timeout
        self._capacity_timeout = capacity_timeout
        self._begin_sql = begin_sql
        self._metrics = metrics
        self._durations: dict[str, Any] = {}
        """query name -> its child of db_query_duration_seconds (the hot path's only label lookup)."""
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._checking: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"Endpoint({self.label})"

    @property
    def tripped(self) -> bool:
        """The breaker opened and no call has succeeded since."""
        return self.breaker.tripped

    def pool_stats(self) -> dict[str, int]:
        """In-use, idle and waiting connections of the pool itself (calls queue for permits
        in front of it: see `capacity.waiting`)."""
        return pool_stats(self.pool)

    # -- admission ------------------------------------------------------------------------

    async def admit(self, *, name: str, probe: bool = False, queue: bool = True) -> None:
        """Wait for a permit, then for the breaker's consent; the caller owns the permit.

        The breaker is asked only once a permit is held, so that in its half-open state the
        one probe it lets through is a call that really goes to the server. Probes bypass the
        breaker; the monitor's do not queue either (`queue=False`): a pool with every
        connection busy is answering, and the monitor keeps what it knew.
        """
        capacity = self.capacity
        if not queue:
            if not capacity.try_acquire():
                raise ShardBusy(self.shard_name, self.role, 0)
            return
        breaker = self.breaker
        if not probe and breaker.is_open:
            self._count_error(name, "circuit_open")
            raise ShardUnavailable(self.shard_name, self.role, CIRCUIT_OPEN)
        try:
            await capacity.acquire(self._capacity_timeout)
        except CapacityTimeout:
            self._count_error(name, "busy")
            raise ShardBusy(self.shard_name, self.role, self._capacity_timeout) from None
        if not probe and not breaker.allow():
            capacity.release()
            self._count_error(name, "circuit_open")
            raise ShardUnavailable(self.shard_name, self.role, CIRCUIT_OPEN)

    # -- one round trip -------------------------------------------------------------------

    async def execute(
        self, sql: str, params: Params, *, name: str, probe: bool = False, queue: bool = True
    ) -> list[Rows]:
        """Run `sql` (possibly several statements) and return the rows of each result that has
        any columns. Probes bypass an open breaker; every outcome is recorded on it."""
        await self.admit(name=name, probe=probe, queue=queue)
        started = time.perf_counter()
        # The deadline is enforced outside the query's task: cancelling a psycopg query makes
        # it send a cancel request and wait up to 10 s for the server to confirm, which a dead
        # server never does. So on timeout the task is left to clean up (its connection is
        # then discarded) and the caller gets its answer now. The permit goes back only when
        # the task is over: until then its connection is not free.
        work = asyncio.ensure_future(self._run(sql, params))
        work.add_done_callback(self._release_permit)
        try:
            done, _ = await asyncio.wait((work,), timeout=self.timeout)
            if not done:
                self.abandon(work)
                raise TimeoutError
            sets = work.result()
        except FAILURES as exc:
            self.record_outcome(name, "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__, exc)
            raise ShardUnavailable(self.shard_name, self.role, failure_reason(exc)) from None
        except BaseException:
            # Not the server's fault (a bug, a constraint, a cancelled request): the server
            # answered or may have, so the breaker only must not stay half-open forever.
            self.abandon(work)
            self.breaker.record_success()
            raise
        self.breaker.record_success()
        duration = self._durations.get(name)
        if duration is None:
            duration = self._durations[name] = self._metrics.query_seconds.labels(
                self.shard_name, self.role, name
            )
        duration.observe(time.perf_counter() - started)
        return sets

    def _release_permit(self, _: asyncio.Future[Any]) -> None:
        self.capacity.release()

    async def _run(self, sql: str, params: Params) -> list[Rows]:
        async with self.pool.connection() as conn:
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
                    self.check_pool()
                raise

    def record_outcome(self, name: str, kind: str, exc: BaseException) -> None:
        """A call that failed: on the breaker if the connection failed, else only counted (the
        server answered: it is up)."""
        if is_connection_failure(exc):
            self.record_failure(name, kind, exc)
            return
        self._count_error(name, kind)
        self.breaker.record_success()
        log.info("%s on %s failed (%s): %s", name, self.label, kind, failure_reason(exc))

    def record_failure(self, name: str, kind: str, exc: BaseException | None = None) -> None:
        """Record a server-side failure; if it opened the breaker, fail the calls queued for
        this pool now rather than after they waited for connections stuck on a dead server."""
        breaker = self.breaker
        breaker.record_failure()
        self._count_error(name, kind)
        # Bounded by the breaker: once it is open, calls fail at admission and land here no more.
        log.warning(
            "%s on %s failed (%s): %s", name, self.label, kind,
            failure_reason(exc) if exc is not None else kind,
        )
        if breaker.tripped:
            shard_name, role = self.shard_name, self.role
            self.capacity.reject_waiting(lambda: ShardUnavailable(shard_name, role, CIRCUIT_OPEN))

    def _count_error(self, name: str, kind: str) -> None:
        self._metrics.child(self._metrics.query_errors, self.shard_name, self.role, name, kind).inc()

    def check_pool(self) -> None:
        """After a connection broke (PgBouncer restarted, say), test the pool's idle
        connections in the background and drop the dead ones, so that requests do not meet
        them one by one. One check at a time."""
        if self._checking is not None:
            return
        task = asyncio.ensure_future(self.pool.check())
        self._checking = task

        def done(finished: asyncio.Future[None]) -> None:
            self._checking = None
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("checking the %s pool failed", self.label)

        task.add_done_callback(done)

    def abandon(self, work: asyncio.Future[Any]) -> None:
        """Cancel a call nobody waits for any more, keeping it referenced until it is done."""
        if work.done():
            if not work.cancelled():
                work.exception()  # retrieved: no "exception never retrieved" noise
            return
        work.cancel()
        self._abandoned.add(work)
        work.add_done_callback(self._forget)

    def _forget(self, work: asyncio.Future[Any]) -> None:
        self._abandoned.discard(work)
        if not work.cancelled():
            work.exception()

    # -- transactions ---------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(
        self, *, name: str, after_commit: AfterCommit | None = None, first: Statement | None = None,
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """A transaction of several statements on this server.

        Same admission, deadline, statement timeout and breaker as single calls. Only getting
        a server (pool, PgBouncer, primary) runs under the call deadline; once BEGIN has
        answered, the body's statements and the commit run under TRANSACTION_DEADLINE_FACTOR
        deadlines (a partition after BEGIN never answers, and statement_timeout is the
        server's, which a partition does not reach), and libpq's tcp_user_timeout and
        keepalives break the socket itself (pools.NETWORK_DEADLINES). After the commit,
        `after_commit` is told the WAL position read in the COMMIT's own round trip
        (read-your-writes markers), one round trip fewer than a separate SELECT.

        `first`: the body's first statement, sent in one text with the BEGIN (one round trip
        fewer), under the same deadline as the BEGIN (its statement timeout, shorter, bounds a
        lock wait); the body reads its results with `opening(conn)`.
        """
        await self.admit(name=name)
        begin = asyncio.ensure_future(self._begin(first))
        try:
            done, _ = await asyncio.wait((begin,), timeout=self.timeout)
            if not done:
                begin.add_done_callback(self._give_back)
                raise TimeoutError
            conn, opened = begin.result()
        except FAILURES as exc:
            if begin.done():
                self.capacity.release()
            self.record_failure(name, "begin", exc)
            raise ShardUnavailable(self.shard_name, self.role, failure_reason(exc)) from None
        except BaseException:  # our caller went away: the BEGIN may still bring a connection
            begin.add_done_callback(self._give_back)
            raise
        # Every statement of the body and the commit run under one client-side deadline (a
        # transaction's statements are a few, each bounded by statement_timeout on the server);
        # past it the connection's state is unknown, so it is closed, not rolled back and reused.
        deadline = asyncio.timeout(self.timeout * TRANSACTION_DEADLINE_FACTOR)
        committing = False
        try:
            position = ""
            try:
                async with deadline:
                    with deferring_last_statement(conn, opened) as last:
                        yield conn
                    committing = True  # from here on a failure may hide an applied COMMIT
                    if last.sql is not None:
                        position = await _commit_with_position(conn, last.sql, last.params)
                    elif after_commit is None:
                        await conn.commit()
                    else:
                        position = await _commit_with_position(conn)
            except BaseException:
                if deadline.expired():
                    with suppress(Exception):
                        await conn.close()
                else:
                    with suppress(Exception):
                        await conn.rollback()
                raise
            if after_commit is not None:
                await after_commit(position)
        except FAILURES as exc:
            self.record_outcome(name, type(exc).__name__, exc)
            if committing:  # the COMMIT was sent: it may have been applied
                raise CommitUncertain(self.shard_name, failure_reason(exc)) from None
            raise ShardUnavailable(self.shard_name, self.role, failure_reason(exc)) from None
        finally:
            try:
                await self.pool.putconn(conn)
            finally:
                self.capacity.release()
        self.breaker.record_success()

    async def _begin(self, first: Statement | None) -> tuple[AsyncConnection[Any], AsyncCursor[Any] | None]:
        conn = await self.pool.getconn()
        try:
            if first is None:
                await conn.execute(self._begin_sql)
                return conn, None
            cursor = await conn.execute(f"{self._begin_sql}; {first[0]}", first[1])
            for _ in range(BEGIN_RESULTS):  # to the first statement's own result
                cursor.nextset()
        except BaseException:
            await self.pool.putconn(conn)
            raise
        return conn, cursor

    def _give_back(self, begin: asyncio.Future[tuple[AsyncConnection[Any], AsyncCursor[Any] | None]]) -> None:
        """A BEGIN that answered after its caller gave up: roll back, return the connection
        and then its permit."""
        if begin.cancelled() or begin.exception() is not None:
            self.capacity.release()
            return
        conn, _ = begin.result()

        async def give_back() -> None:
            try:
                with suppress(Exception):
                    await conn.rollback()
                await self.pool.putconn(conn)
            finally:
                self.capacity.release()

        task = asyncio.ensure_future(give_back())
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)


async def _commit_with_position(
    conn: AsyncConnection[Any], last_sql: str | None = None, last_params: Params = ()
) -> str:
    """COMMIT and the primary's WAL position after it, in one round trip (as writes do);
    with the body's last statement in front when it left one (`finish_with`)."""
    if last_sql is None:
        cursor = await conn.execute(COMMIT_WITH_POSITION_SQL)
    else:
        cursor = await conn.execute(f"{last_sql}; {COMMIT_WITH_POSITION_SQL}", last_params)
    row = None
    while True:  # the position is the last result set
        if cursor.description is not None:
            row = await cursor.fetchone()
        if not cursor.nextset():
            break
    return str(row[0]) if row else ""


def failure_reason(exc: BaseException) -> str:
    """A short, single-line reason for ShardUnavailable and the failure log."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class ShardEndpoints:
    """A shard's two endpoints, primary (writes) and replica (reads)."""

    __slots__ = ("index", "name", "primary", "replica")

    def __init__(self, index: int, name: str, primary: Endpoint, replica: Endpoint) -> None:
        self.index = index
        self.name = name
        self.primary = primary
        self.replica = replica

    def __iter__(self) -> Iterator[Endpoint]:
        return iter((self.primary, self.replica))

    def role(self, role: Role) -> Endpoint:
        return self.primary if role == "primary" else self.replica
