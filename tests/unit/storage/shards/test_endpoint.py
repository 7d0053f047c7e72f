"""An endpoint's machinery without servers: admission, the breaker, deadlines, query names."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from messenger.domain.errors import ShardBusy, ShardUnavailable
from messenger.metrics import Metrics
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.endpoint import CIRCUIT_OPEN, Endpoint
from messenger.storage.shards.pools import PoolSizing, ShardPools
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import ShardConfig, Topology
from tests.unit.storage.shards.fake_pool import Answer, FakePool, Rows, one_row


def make_endpoint(
    answer: Answer = one_row, *, max_size: int = 2, failures: int = 2, timeout: float = 0.2,
    capacity_timeout: float = 1.0, metrics: Metrics | None = None,
) -> tuple[Endpoint, FakePool, Metrics]:
    pool = FakePool(max_size, answer)
    metrics = metrics or Metrics()
    endpoint = Endpoint(
        0, "shard_0", "primary", pool,  # type: ignore[arg-type]
        breaker=CircuitBreaker("shard_0-primary", failure_threshold=failures, reset_after=60.0),
        timeout=timeout, capacity_timeout=capacity_timeout, begin_sql="BEGIN", metrics=metrics,
    )
    return endpoint, pool, metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def blocked_until(event: asyncio.Event) -> Answer:
    async def answer(sql: str, params: Any) -> list[Rows]:
        await event.wait()
        return [[(1,)]]

    return answer


async def refused(sql: str, params: Any) -> list[Rows]:
    raise psycopg.OperationalError("connection refused")


async def test_a_call_returns_each_result_set_and_times_itself_under_its_name() -> None:
    async def two_sets(sql: str, params: Any) -> list[Rows]:
        return [[("0/1",)], [(7,)]]

    endpoint, pool, metrics = make_endpoint(two_sets)
    assert await endpoint.execute("SELECT 7", (), name="get_user") == [[("0/1",)], [(7,)]]
    labels = {"shard": "shard_0", "role": "primary", "query": "get_user"}
    assert sample(metrics, "db_query_duration_seconds_count", labels) == 1
    assert pool.executed == [("SELECT 7", ())]
    assert endpoint.capacity.in_use == 0


async def test_a_server_that_does_not_answer_in_time_fails_the_call_and_counts_it() -> None:
    endpoint, _, metrics = make_endpoint(blocked_until(asyncio.Event()), timeout=0.05)
    with pytest.raises(ShardUnavailable) as failed:
        await endpoint.execute("SELECT 1", (), name="get_user")
    assert str(failed.value).endswith("timed out")
    labels = {"shard": "shard_0", "role": "primary", "query": "get_user", "kind": "timeout"}
    assert sample(metrics, "db_query_errors_total", labels) == 1
    assert not endpoint.tripped  # one failure of two


async def test_the_timeout_that_opens_the_breaker_fails_the_calls_queued_for_permits() -> None:
    # A dead server: the call holding the only permit never hears back.
    endpoint, pool, _ = make_endpoint(blocked_until(asyncio.Event()), max_size=1, failures=1, timeout=0.05)
    holder = asyncio.create_task(endpoint.execute("SELECT 1", (), name="add_user"))
    await asyncio.sleep(0)
    queued = asyncio.create_task(endpoint.execute("SELECT 1", (), name="add_user"))
    await asyncio.sleep(0)
    assert endpoint.capacity.waiting == 1
    outcomes = await asyncio.gather(holder, queued, return_exceptions=True)
    assert all(isinstance(o, ShardUnavailable) for o in outcomes)
    assert str(outcomes[1]).endswith(CIRCUIT_OPEN)
    assert len(pool.executed) == 1  # the queued call never reached the server
    assert endpoint.tripped


async def test_an_open_breaker_refuses_calls_at_once_but_lets_a_probe_close_it() -> None:
    endpoint, pool, _ = make_endpoint(refused, failures=1)
    with pytest.raises(ShardUnavailable):
        await endpoint.execute("SELECT 1", (), name="get_user")
    assert endpoint.tripped
    with pytest.raises(ShardUnavailable) as refused_call:
        await endpoint.execute("SELECT 1", (), name="get_user")
    assert str(refused_call.value).endswith(CIRCUIT_OPEN)
    assert len(pool.executed) == 1 and endpoint.capacity.in_use == 0

    pool.answer = one_row  # the server is back
    assert await endpoint.execute("SELECT 1", (), name="probe", probe=True) == [[(1,)]]
    assert not endpoint.tripped


async def test_waiting_past_the_capacity_bound_is_busy_and_not_a_failure() -> None:
    release = asyncio.Event()
    endpoint, _, metrics = make_endpoint(
        blocked_until(release), max_size=1, failures=1, timeout=5.0, capacity_timeout=0.05
    )
    holder = asyncio.create_task(endpoint.execute("SELECT 1", (), name="get_user"))
    await asyncio.sleep(0)
    with pytest.raises(ShardBusy):
        await endpoint.execute("SELECT 1", (), name="get_user")
    release.set()
    await holder
    assert not endpoint.tripped
    labels = {"shard": "shard_0", "role": "primary", "query": "get_user", "kind": "busy"}
    assert sample(metrics, "db_query_errors_total", labels) == 1


async def test_a_probe_that_may_not_queue_is_busy_at_once_when_every_permit_is_held() -> None:
    release = asyncio.Event()
    endpoint, _, _ = make_endpoint(blocked_until(release), max_size=1, timeout=5.0)
    holder = asyncio.create_task(endpoint.execute("SELECT 1", (), name="get_user"))
    await asyncio.sleep(0)
    with pytest.raises(ShardBusy):
        await endpoint.execute("SELECT 1", (), name="monitor_primary", probe=True, queue=False)
    release.set()
    await holder
    assert endpoint.capacity.in_use == 0


async def test_an_error_that_is_not_the_servers_propagates_and_leaves_the_breaker_closed() -> None:
    async def duplicate(sql: str, params: Any) -> list[Rows]:
        raise psycopg.errors.UniqueViolation("duplicate key")

    endpoint, _, _ = make_endpoint(duplicate, failures=1)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await endpoint.execute("INSERT ...", (), name="add_user")
    assert not endpoint.tripped and endpoint.capacity.in_use == 0


@pytest.mark.parametrize("error", [
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.LockNotAvailable("could not obtain lock"),
])
async def test_errors_of_the_statement_not_the_connection_leave_the_breaker_closed(error: Exception) -> None:  # item 11
    async def fails(sql: str, params: Any) -> list[Rows]:
        raise error

    endpoint, pool, _ = make_endpoint(fails, failures=1)
    for _ in range(3):
        with pytest.raises(ShardUnavailable):
            await endpoint.execute("DELETE FROM users WHERE id = %s", (1,), name="delete_user")
    assert not endpoint.tripped and len(pool.executed) == 3


async def test_a_server_shutting_down_counts_on_the_breaker() -> None:
    async def shutting_down(sql: str, params: Any) -> list[Rows]:
        raise psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    endpoint, _, _ = make_endpoint(shutting_down, failures=1)
    with pytest.raises(ShardUnavailable):
        await endpoint.execute("SELECT 1", (), name="get_user")
    assert endpoint.tripped


async def test_a_statement_inside_a_transaction_that_never_answers_fails_within_the_deadline() -> None:  # item 10
    # A partition after BEGIN (packets dropped, no RST): the call must not wait for TCP.
    async def hangs_after_begin(sql: str, params: Any) -> list[Rows]:
        if sql != "BEGIN":
            await asyncio.Event().wait()
        return []

    endpoint, pool, _ = make_endpoint(hangs_after_begin, timeout=0.05)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ShardUnavailable):
        async with endpoint.transaction(name="send_message") as conn:
            await conn.execute("INSERT INTO messages VALUES (1)")
    assert asyncio.get_running_loop().time() - started < 2
    assert endpoint.capacity.in_use == 0
    assert pool.returned and pool.returned[0].closed  # its state is unknown: not reused


def test_every_pool_connection_has_tcp_deadlines() -> None:  # item 10
    topology = Topology(epoch=1, shards=(ShardConfig(0, "shard_0", "rw", "ro", "rw", "ro"),), redis_url="redis://unused")
    pools = [ShardPools(topology.shards, PoolSizing(0, 2, 1.0), app_name="t").get(0, "primary"),
             PrimaryPools(topology)._pools[0]]
    for pool in pools:
        assert pool.kwargs["keepalives"] == 1 and pool.kwargs["tcp_user_timeout"] > 0
