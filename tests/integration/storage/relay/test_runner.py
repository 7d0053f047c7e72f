"""The outbox relay on scratch databases: at-least-once delivery, applied exactly once, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from messenger.cluster.local import LocalCluster
from messenger.domain.errors import ShardUnavailable
from messenger.domain.events import OutboxEvent
from messenger.storage.migrator import migrate
from messenger.storage.outbox import append_event, first_application
from messenger.storage.relay.runner import OutboxRelay, ShardTransactions
from messenger.storage.shards.primaries import PrimaryPools
from messenger.storage.shards.ring import ring_position
from messenger.topology import Topology
from tests.support.scratch import scratch_topology

PROBE_TABLE = """
CREATE TABLE relay_probe (
    event_id uuid NOT NULL, aggregate text NOT NULL, seq int NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


async def record_probe(event: OutboxEvent, shards: ShardTransactions) -> None:
    """Test handler: write one probe row on the shard that owns payload['key']."""
    if event.payload.get("fail"):
        raise RuntimeError("handler asked to fail")
    async with shards.transaction(shards.shard_for(event.payload["key"])) as conn:
        if await first_application(conn, event.id):
            await conn.execute(
                "INSERT INTO relay_probe (event_id, aggregate, seq) VALUES (%s, %s, %s)",
                (event.id, event.aggregate, event.payload["seq"]),
            )


@pytest.fixture(scope="module")
def relay_topology(cluster: LocalCluster) -> Iterator[Topology]:
    with scratch_topology(cluster.topology) as topology:
        assert all(o.ok for o in migrate(topology))
        for shard in topology.shards:
            with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
                conn.execute(PROBE_TABLE)
        yield topology


@pytest.fixture
async def pools(relay_topology: Topology) -> AsyncIterator[PrimaryPools]:
    async with PrimaryPools(relay_topology) as pools:
        yield pools
        for shard in relay_topology.shards:  # leave nothing behind for the next test
            # Bounded: an interrupted test may leave a server stopped or a lock held.
            with psycopg.connect(shard.primary_dsn, autocommit=True, connect_timeout=5,
                                 options="-c statement_timeout=10000") as conn:
                conn.execute("TRUNCATE relay_probe, outbox, applied_events")


async def _emit(pools: PrimaryPools, source: int, events: list[tuple[str, dict]]) -> None:
    async with pools.transaction(source) as conn:
        for aggregate, payload in events:
            await append_event(conn, aggregate, "probe", payload)


def _probes(topology: Topology) -> list[tuple[str, int]]:
    rows: list[tuple[str, int, object]] = []
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn) as conn:
            rows += conn.execute("SELECT aggregate, seq, applied_at FROM relay_probe").fetchall()
    return [(a, s) for a, s, _ in sorted(rows, key=lambda r: r[2])]


def _key_on(pools: PrimaryPools, shard: int) -> str:
    while True:
        key = str(uuid.uuid4())
        if pools.shard_for(key) == shard:
            return key


async def test_events_reach_their_target_shards_once(pools: PrimaryPools, relay_topology: Topology) -> None:
    events = [("agg:a", {"key": str(uuid.uuid4()), "seq": i}) for i in range(30)]
    await _emit(pools, 0, events)
    relay = OutboxRelay(pools, {"probe": record_probe})
    await relay.drain()
    await relay.run_once()  # nothing left: no second application
    assert _probes(relay_topology) == [("agg:a", i) for i in range(30)]
    assert all(b.pending == 0 and b.dead == 0 for b in await relay.backlog())


async def test_two_relays_at_once_apply_each_event_once(pools: PrimaryPools, relay_topology: Topology) -> None:
    for source in pools.shard_indexes:
        await _emit(pools, source, [(f"agg:{source}", {"key": str(uuid.uuid4()), "seq": i}) for i in range(40)])
    async with PrimaryPools(relay_topology) as other_pools:
        first = OutboxRelay(pools, {"probe": record_probe}, batch_size=7)
        second = OutboxRelay(other_pools, {"probe": record_probe}, batch_size=7)
        for _ in range(20):
            await asyncio.gather(first.run_once(), second.run_once())
        await first.drain()
    probes = _probes(relay_topology)
    assert len(probes) == 40 * len(pools.shard_indexes)
    for source in pools.shard_indexes:
        assert [s for a, s in probes if a == f"agg:{source}"] == list(range(40)), "per-aggregate order"


async def test_a_pass_of_slow_applies_commits_what_it_delivered_within_its_budget(
    pools: PrimaryPools, relay_topology: Topology
) -> None:
    # A target shard that answers slowly (partitioned) makes every apply slow; a pass that
    # ran past its transaction's deadline lost all its deliveries and was claimed again.
    async def slow_probe(event: OutboxEvent, shards: ShardTransactions) -> None:
        await asyncio.sleep(0.2)
        await record_probe(event, shards)

    await _emit(pools, 0, [(f"agg:{i}", {"key": str(uuid.uuid4()), "seq": i}) for i in range(20)])
    relay = OutboxRelay(pools, {"probe": slow_probe}, batch_budget_s=1.0)
    started = asyncio.get_running_loop().time()
    result = await relay.run_once()
    elapsed = asyncio.get_running_loop().time() - started
    assert 1 <= result.delivered < 20 and result.failed <= 1
    assert elapsed < 2.0
    assert len(_probes(relay_topology)) == result.delivered  # committed, not rolled back
    await relay.drain()
    assert sorted(s for _, s in _probes(relay_topology)) == list(range(20))


async def test_a_target_shard_that_is_down_gets_its_events_when_it_returns(
    cluster: LocalCluster, pools: PrimaryPools, relay_topology: Topology
) -> None:
    down = 2
    await _emit(pools, 0, [("agg:x", {"key": _key_on(pools, down), "seq": 1}),
                           ("agg:x", {"key": _key_on(pools, 1), "seq": 2}),
                           ("agg:y", {"key": _key_on(pools, 1), "seq": 1})])
    relay = OutboxRelay(pools, {"probe": record_probe}, apply_timeout_s=2)
    cluster.stop_server(down, "primary")
    try:
        result = await relay.run_once()
        assert result.failed == 1
        # agg:x's second event waits behind its first; agg:y is unaffected.
        assert _probes_without(relay_topology, down) == [("agg:y", 1)]
    finally:
        cluster.start_server(down, "primary")
    await relay.drain()
    assert sorted(_probes(relay_topology)) == [("agg:x", 1), ("agg:x", 2), ("agg:y", 1)]
    assert [s for a, s in _probes(relay_topology) if a == "agg:x"] == [1, 2]


def _probes_without(topology: Topology, skip: int) -> list[tuple[str, int]]:
    rows = []
    for shard in topology.shards:
        if shard.index == skip:
            continue
        with psycopg.connect(shard.primary_dsn) as conn:
            rows += conn.execute("SELECT aggregate, seq FROM relay_probe").fetchall()
    return sorted(rows)


async def test_an_event_that_keeps_failing_becomes_a_dead_letter(pools: PrimaryPools, relay_topology: Topology) -> None:
    await _emit(pools, 1, [("agg:bad", {"key": "k", "seq": 1, "fail": True})])
    relay = OutboxRelay(pools, {"probe": record_probe}, max_attempts=3)
    for _ in range(3):
        await relay.run_once()
        with psycopg.connect(relay_topology.shards[1].primary_dsn, autocommit=True) as conn:
            conn.execute("UPDATE outbox SET next_attempt_at = now()")  # skip the backoff wait
    backlog = {b.shard: b for b in await relay.backlog()}
    assert backlog["shard_1"].dead == 1 and backlog["shard_1"].pending == 0
    with psycopg.connect(relay_topology.shards[1].primary_dsn) as conn:
        row = conn.execute("SELECT attempts, last_error FROM outbox").fetchone()
    assert row is not None and row[0] == 3 and "handler asked to fail" in row[1]


async def test_an_unknown_event_type_is_retried_not_dropped(pools: PrimaryPools) -> None:
    async with pools.transaction(0) as conn:
        await append_event(conn, "agg:z", "never.heard.of", {})
    relay = OutboxRelay(pools, {"probe": record_probe})
    result = await relay.run_once()
    assert result.failed == 1
    assert sum(b.pending for b in await relay.backlog()) == 1


def _reset_backoff(topology: Topology) -> None:
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            conn.execute("UPDATE outbox SET next_attempt_at = now() WHERE delivered_at IS NULL")


async def test_more_than_a_batch_of_failing_events_does_not_hold_back_healthy_ones(
    pools: PrimaryPools, relay_topology: Topology
) -> None:
    failing = [(f"agg:bad{i}", {"key": "k", "seq": i, "fail": True}) for i in range(25)]
    healthy = [(f"agg:ok{i}", {"key": str(uuid.uuid4()), "seq": i}) for i in range(3)]
    await _emit(pools, 0, failing + healthy)
    relay = OutboxRelay(pools, {"probe": record_probe}, batch_size=10)
    for _ in range(4):  # the failing ones back off; the claim must reach past them
        await relay.run_once()
    assert sorted(_probes(relay_topology)) == sorted((a, p["seq"]) for a, p in healthy)


async def test_a_dead_letter_keeps_blocking_its_aggregate(pools: PrimaryPools, relay_topology: Topology) -> None:
    await _emit(pools, 1, [("agg:bad", {"key": "k", "seq": 1, "fail": True}),
                           ("agg:bad", {"key": str(uuid.uuid4()), "seq": 2}),
                           ("agg:other", {"key": str(uuid.uuid4()), "seq": 1})])
    relay = OutboxRelay(pools, {"probe": record_probe}, max_attempts=1)
    for _ in range(3):
        await relay.run_once()
        _reset_backoff(relay_topology)
    backlog = {b.shard: b for b in await relay.backlog()}
    assert backlog["shard_1"].dead == 1
    assert _probes(relay_topology) == [("agg:other", 1)], "seq 2 must not overtake its dead seq 1"


async def test_infrastructure_errors_are_retried_for_ever(pools: PrimaryPools, relay_topology: Topology) -> None:
    async def unreachable(event: OutboxEvent, shards: ShardTransactions) -> None:
        raise ShardUnavailable("shard_2", "primary", "timed out")

    await _emit(pools, 0, [("agg:outage", {"key": "k", "seq": 1})])
    relay = OutboxRelay(pools, {"probe": unreachable}, max_attempts=2)
    for _ in range(5):
        await relay.run_once()
        _reset_backoff(relay_topology)
    backlog = {b.shard: b for b in await relay.backlog()}
    assert backlog["shard_0"].dead == 0 and backlog["shard_0"].pending == 1
    with psycopg.connect(relay_topology.shards[0].primary_dsn) as conn:
        row = conn.execute("SELECT attempts FROM outbox").fetchone()
    assert row == (5,)
    relay.handlers["probe"] = record_probe  # the shard is back
    await relay.drain()
    assert len(_probes(relay_topology)) == 1


async def test_the_relay_skips_events_in_a_fenced_range_until_the_fence_is_lifted(
    pools: PrimaryPools, relay_topology: Topology
) -> None:
    fenced_key, free_key = uuid.uuid4(), uuid.uuid4()
    await _emit(pools, 0, [
        (f"user:{fenced_key}", {"key": str(fenced_key), "seq": 1}),
        (f"user:{free_key}", {"key": str(free_key), "seq": 1}),
    ])
    position = ring_position(str(fenced_key))
    relay = OutboxRelay(pools, {"probe": record_probe})
    with psycopg.connect(relay_topology.shard(0).primary_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ring_fence (lo, hi, state, workflow) VALUES (%s, %s, 'moved', 'test-relay')",
            (position, position + 1),
        )
        try:
            outcome = await relay.run_once()
            assert outcome.delivered == 1 and outcome.failed == 0
            assert _probes(relay_topology) == [(f"user:{free_key}", 1)]
        finally:
            conn.execute("DELETE FROM ring_fence WHERE workflow = 'test-relay'")
    await relay.drain(timeout_s=10)
    assert sorted(_probes(relay_topology)) == sorted([(f"user:{free_key}", 1), (f"user:{fenced_key}", 1)])
