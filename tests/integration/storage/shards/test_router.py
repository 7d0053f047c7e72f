"""The shard router against real servers: tokens, replica lag, breakers, recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from messenger.domain.errors import CommitUncertain, ShardBusy, ShardUnavailable
from messenger.domain.ids import new_id
from messenger.metrics import Metrics
from messenger.settings import Settings
from messenger.storage.shards import endpoint as endpoint_module
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.freshness import FreshnessMarkers
from messenger.storage.shards.pools import PoolSizing, ShardPools
from messenger.storage.shards.router import ShardRouter
from messenger.storage.shards.transactions import finish_with, opening
from messenger.storage.users import INSERT_USER, SELECT_USER
from tests.e2e.api.conftest import lagging_replicas
from tests.support.waiting import wait_for, wait_for_async

SMALL_POOLS = PoolSizing(1, 4, 1.0)


@asynccontextmanager
async def make_router(
    cluster: Any, sizing: PoolSizing = SMALL_POOLS, **overrides: Any
) -> AsyncIterator[ShardRouter]:
    settings = replace(Settings.from_env(cluster.topology_path, workers=1), **overrides)
    pools = ShardPools(settings.topology.shards, sizing, app_name="router-test")
    await pools.open()
    freshness = FreshnessMarkers(
        settings.topology.redis_url, ttl_ms=5000, timeout_s=0.25,
        breaker=CircuitBreaker("redis", failure_threshold=1),
    )
    router = ShardRouter(settings.topology, pools, freshness, settings, Metrics())
    try:
        yield router
    finally:
        await router.stop_monitor()
        await freshness.close()
        await pools.close()


@pytest.fixture
async def router(cluster: Any) -> AsyncIterator[ShardRouter]:
    async with make_router(cluster) as made:
        yield made


async def insert(router: ShardRouter, *, key: bool = True) -> tuple[uuid.UUID, int, str | None]:
    user_id = new_id()
    shard = router.shard_for(str(user_id))
    written = await router.write(
        shard, INSERT_USER, (user_id, "R", "W"), key=str(user_id) if key else None
    )
    return user_id, shard, written.token


async def test_write_returns_a_token_naming_epoch_shard_and_position(router: ShardRouter) -> None:
    _, shard, token = await insert(router)
    assert token is not None
    epoch, token_shard, lsn = token.split(".")
    assert (int(epoch), int(token_shard)) == (router.topology.epoch, shard) and int(lsn, 16) > 0


async def test_token_makes_a_lagging_replica_fall_back_to_the_primary(
    router: ShardRouter, cluster: Any
) -> None:
    with lagging_replicas(cluster.topology):
        user_id, shard, token = await insert(router, key=False)
        # No marker and no token: the replica answers, and it has not seen the row yet.
        assert await router.read(shard, SELECT_USER, (user_id,)) == []
        rows = await router.read(shard, SELECT_USER, (user_id,), token=token)
        assert rows and rows[0][0] == user_id


async def test_marker_makes_a_lagging_replica_fall_back_to_the_primary(
    router: ShardRouter, cluster: Any
) -> None:
    with lagging_replicas(cluster.topology):
        user_id, shard, _ = await insert(router)
        rows = await router.read(shard, SELECT_USER, (user_id,), key=str(user_id))
        assert rows and rows[0][0] == user_id


async def test_monitor_measures_replica_lag(router: ShardRouter, cluster: Any) -> None:
    shard = router.shard_indexes[0]
    await router.check_shard(shard)
    with lagging_replicas(cluster.topology, "2s"):
        for _ in range(3):
            await insert(router)

        async def lagging() -> bool:
            await router.write(
                shard, INSERT_USER, (_id_on(router, shard), "Lag", "Probe"), key=None
            )
            state = await router.check_shard(shard)
            return state.lag_seconds is not None and state.lag_seconds > 0.5

        await wait_for_async(lagging, 10, "lag to show")
        assert router.state(shard).lag_bytes
    await wait_for_async(
        lambda: _lag_below(router, shard, 0.5), 15, "lag to disappear after the delay is reset"
    )


async def _lag_below(router: ShardRouter, shard: int, bound: float) -> bool:
    state = await router.check_shard(shard)
    return state.lag_seconds is not None and state.lag_seconds < bound


def _id_on(router: ShardRouter, shard: int) -> uuid.UUID:
    while True:
        candidate = new_id()
        if router.shard_for(str(candidate)) == shard:
            return candidate


async def test_dead_primary_fails_fast_once_its_breaker_is_open_and_recovers(
    router: ShardRouter, cluster: Any
) -> None:
    shard = router.shard_indexes[-1]
    cluster.stop_server(shard, "primary")
    try:
        started = time.monotonic()
        with pytest.raises(ShardUnavailable) as first:
            await router.write(shard, INSERT_USER, (_id_on(router, shard), "a", "b"), key=None)
        assert time.monotonic() - started < 2.0
        assert first.value.shard == router.shard_name(shard) and first.value.role == "primary"
        with pytest.raises(ShardUnavailable):
            await router.write(shard, INSERT_USER, (_id_on(router, shard), "a", "b"), key=None)
        # Now open: the next call does not wait for a timeout.
        started = time.monotonic()
        with pytest.raises(ShardUnavailable):
            await router.write(shard, INSERT_USER, (_id_on(router, shard), "a", "b"), key=None)
        assert time.monotonic() - started < 0.1
    finally:
        cluster.start_server(shard, "primary")

    async def writes_again() -> bool:
        await router.check_shard(shard)  # what the monitor does a few times a second
        try:
            await router.write(shard, INSERT_USER, (_id_on(router, shard), "a", "b"), key=None)
        except ShardUnavailable:
            return False
        return True

    await wait_for_async(writes_again, 20, "the primary to take writes again")


async def test_replica_lagging_beyond_the_bound_sends_reads_to_the_primary(cluster: Any) -> None:
    async with make_router(cluster, max_replica_lag_s=0.5) as router:
        await _read_beyond_the_lag_bound(router, cluster)


async def _read_beyond_the_lag_bound(router: ShardRouter, cluster: Any) -> None:
    shard = router.shard_indexes[0]
    with lagging_replicas(cluster.topology, "3s"):
        user_id = _id_on(router, shard)
        await router.write(shard, INSERT_USER, (user_id, "Lag", "Bound"), key=None)

        async def over_bound() -> bool:
            state = await router.check_shard(shard)
            return state.lag_seconds is not None and state.lag_seconds > 0.5

        await wait_for_async(over_bound, 10, "lag beyond the bound")
        # No marker and no token, yet the row is there: the read went to the primary.
        rows = await router.read(shard, SELECT_USER, (user_id,))
        assert rows and rows[0][0] == user_id


async def test_a_broken_connection_makes_the_pool_drop_its_dead_siblings(cluster: Any) -> None:
    async with make_router(cluster, PoolSizing(4, 4, 1.0)) as router:
        shard = router.shard_indexes[-1]
        pool = router._pools.get(shard, "primary")
        await pool.wait(5.0)

        async def write() -> None:
            await router.write(shard, INSERT_USER, (_id_on(router, shard), "P", "B"), key=None)

        await asyncio.gather(*(write() for _ in range(4)))
        cluster.stop_server(shard, "pgbouncer")  # every pooled connection dies with it
        cluster.start_server(shard, "pgbouncer")
        wait_for(lambda: _accepts(router.topology.shard(shard).rw_dsn), 10, "PgBouncer back")
        with pytest.raises(ShardUnavailable):
            await write()  # meets one dead connection
        # ... and the pool tests the rest in the background instead of serving them.
        await wait_for_async(
            lambda: _lost_at_least(pool, 3), 5, "the dead idle connections to be dropped"
        )
        await asyncio.gather(*(write() for _ in range(4)))


async def _lost_at_least(pool: Any, count: int) -> bool:
    return pool.get_stats().get("connections_lost", 0) >= count


def _accepts(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


SLOW_READ = "SELECT pg_sleep(0.3), 1"


async def test_calls_queued_for_a_busy_pool_succeed_and_do_not_trip_the_breaker(
    cluster: Any,
) -> None:
    # One connection, five calls of 0.3 s each: the last waits about 1.2 s for the pool,
    # beyond the replica's deadline (0.75 s). Waiting is not the server's failure.
    async with make_router(cluster, PoolSizing(1, 1, 1.0)) as router:
        shard = router.shard_indexes[0]
        results = await asyncio.gather(*(router.read(shard, SLOW_READ, ()) for _ in range(5)))
        assert all(rows == [("", 1)] for rows in results)
        assert not router.breaker_open(shard, "replica")
        assert not router.breaker_open(shard, "primary")


async def test_a_wait_for_capacity_beyond_its_bound_is_shard_busy_not_a_failure(
    cluster: Any,
) -> None:
    async with make_router(cluster, PoolSizing(1, 1, 1.0), capacity_timeout_s=0.1) as router:
        shard = router.shard_indexes[0]
        holder = asyncio.create_task(router.read(shard, SLOW_READ, ()))
        await asyncio.sleep(0.05)
        with pytest.raises(ShardBusy) as busy:
            await router.read(shard, "SELECT 1", ())
        assert busy.value.shard == router.shard_name(shard)
        await holder
        assert not router.breaker_open(shard, "replica")
        assert await router.read(shard, "SELECT 1", ()) == [(1,)]


async def test_calls_queued_for_a_dead_primary_fail_when_its_breaker_opens(cluster: Any) -> None:
    async with make_router(cluster, PoolSizing(2, 2, 1.0)) as router:
        shard = router.shard_indexes[-1]
        cluster.stop_server(shard, "primary")
        try:
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(
                    router.write(shard, INSERT_USER, (_id_on(router, shard), "a", "b"), key=None)
                    for _ in range(20)
                ),
                return_exceptions=True,
            )
            # The two holding connections time out (1.5 s), the breaker opens, and the 18
            # queued behind them fail at that moment instead of queueing on.
            assert time.monotonic() - started < 2.0
            assert all(isinstance(o, ShardUnavailable) for o in outcomes), outcomes
        finally:
            cluster.start_server(shard, "primary")


async def test_a_failure_after_commit_says_the_commit_is_uncertain_and_one_before_does_not(
    router: ShardRouter, cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = new_id()
    shard = router.shard_for(str(user_id))
    # PgBouncer backs off logins for a while after an earlier test terminated a backend.
    await wait_for_async(lambda: _primary_answers(router, shard), 10, "the shard to answer")
    # The connection drops right after COMMIT, where the position is read (same round trip).
    monkeypatch.setattr(
        endpoint_module, "COMMIT_WITH_POSITION_SQL", "COMMIT; SELECT pg_terminate_backend(pg_backend_pid())"
    )
    with pytest.raises(CommitUncertain):
        async with router.transaction(shard, marks=[str(user_id)]) as conn:
            await conn.execute(INSERT_USER, (user_id, "After", "Commit"))
    with psycopg.connect(cluster.topology.shard(shard).primary_dsn) as direct:
        assert direct.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is not None
    monkeypatch.undo()
    await wait_for_async(lambda: _primary_answers(router, shard), 10, "the breaker to let calls through")
    # Dropped before COMMIT: nothing was written, and the error says so by its type.
    other = new_id()
    await wait_for_async(
        lambda: _primary_answers(router, router.shard_for(str(other))), 10, "the other shard to answer"
    )
    with pytest.raises(ShardUnavailable) as caught:
        async with router.transaction(router.shard_for(str(other))) as conn:
            await conn.execute(INSERT_USER, (other, "Before", "Commit"))
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert not isinstance(caught.value, CommitUncertain)


async def _primary_answers(router: ShardRouter, shard: int) -> bool:
    try:
        async with router.transaction(shard) as conn:
            await conn.execute("SELECT 1")
        return True
    except ShardUnavailable:
        return False


async def test_a_transaction_opened_with_its_first_statement_reads_its_results(router: ShardRouter) -> None:
    user_id, shard, _ = await insert(router)
    async with router.transaction(
        shard, name="first_statement", first=(SELECT_USER, (user_id,))
    ) as conn:
        row = await opening(conn).fetchone()
    assert row is not None and row[0] == user_id


async def test_a_last_statement_left_for_the_commit_is_committed_and_marked(
    router: ShardRouter, cluster: Any,
) -> None:
    user_id = new_id()
    shard = router.shard_for(str(user_id))
    await wait_for_async(lambda: _primary_answers(router, shard), 10, "the shard to answer")
    async with router.transaction(shard, name="last_statement", marks=[str(user_id)]) as conn:
        await finish_with(conn, "INSERT INTO users (id, first_name, last_name) VALUES (%s, %s, %s)",
                          (user_id, "Last", "Statement"))
        # Left for the COMMIT: not sent yet.
        cursor = await conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
        assert await cursor.fetchone() is None
    with psycopg.connect(cluster.topology.shard(shard).primary_dsn) as direct:
        assert direct.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is not None
    assert await router.recently_written(str(user_id))


async def test_a_connection_lost_in_the_last_statement_s_round_trip_is_commit_uncertain(
    router: ShardRouter, monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id = new_id()
    shard = router.shard_for(str(user_id))
    await wait_for_async(lambda: _primary_answers(router, shard), 10, "the shard to answer")
    monkeypatch.setattr(
        endpoint_module, "COMMIT_WITH_POSITION_SQL", "COMMIT; SELECT pg_terminate_backend(pg_backend_pid())"
    )
    with pytest.raises(CommitUncertain):
        async with router.transaction(shard, marks=[str(user_id)]) as conn:
            await finish_with(conn, INSERT_USER, (user_id, "Last", "Lost"))
    monkeypatch.undo()
    await wait_for_async(lambda: _primary_answers(router, shard), 10, "the breaker to let calls through")
