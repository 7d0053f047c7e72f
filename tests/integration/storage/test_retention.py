"""The retention pruner on a scratch database: old delivered rows go, in bounded batches."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest

from messenger.cluster.local import LocalCluster
from messenger.domain.errors import ShardUnavailable
from messenger.domain.ids import new_id
from messenger.storage.migrator import migrate
from messenger.storage.retention import PRUNE_APPLIED_EVENTS, Retention, RetentionPruner
from messenger.storage.shards.primaries import PrimaryPools
from messenger.storage.shards.ring import ring_position
from messenger.topology import Topology
from tests.support.scratch import scratch_topology

INSERT_OUTBOX = """
INSERT INTO outbox (id, aggregate, type, payload, created_at, delivered_at, dead_at)
VALUES (%s, %s, 'test.kept', '{}', now() - interval '3 days', %s, %s)
"""


@pytest.fixture(scope="module")
def retention_topology(cluster: LocalCluster) -> Iterator[Topology]:
    with scratch_topology(cluster.topology) as topology:
        assert all(o.ok for o in migrate(topology))
        yield topology


@pytest.fixture
async def pools(retention_topology: Topology) -> AsyncIterator[PrimaryPools]:
    async with PrimaryPools(retention_topology, max_size=4) as pools:
        yield pools


async def test_old_delivered_rows_go_in_bounded_batches_and_pending_and_dead_ones_stay(
    pools: PrimaryPools,
) -> None:
    shard = pools.shard_indexes[0]
    kept: dict[str, object] = {}
    async with pools.transaction(shard, name="test_seed_outbox") as conn:
        for _ in range(5):
            await conn.execute(INSERT_OUTBOX, (new_id(), "a:old", "-infinity", None))
        for aggregate, delivered, dead in (
            ("a:pending", None, None),
            ("a:dead", None, "-infinity"),
            ("a:recent", "now", None),
        ):
            kept[aggregate] = new_id()
            await conn.execute(INSERT_OUTBOX, (kept[aggregate], aggregate, delivered, dead))
        for event, age in ((new_id(), "8 days"), (new_id(), "8 days"), (new_id(), "1 day")):
            await conn.execute(
                "INSERT INTO applied_events (event_id, applied_at) VALUES (%s, now() - %s::interval)", (event, age)
            )
    deleted = await RetentionPruner(pools, Retention(batch=2, pause_s=0)).prune_once()
    assert deleted["outbox"] == 5 and deleted["applied_events"] == 2
    async with pools.transaction(shard, name="test_read_outbox") as conn:
        cursor = await conn.execute("SELECT aggregate FROM outbox ORDER BY aggregate")
        assert [row[0] for row in await cursor.fetchall()] == ["a:dead", "a:pending", "a:recent"]
        cursor = await conn.execute("SELECT count(*) FROM applied_events")
        assert await cursor.fetchone() == (1,)


async def test_each_prune_statement_deletes_at_most_one_batch(pools: PrimaryPools) -> None:
    shard = pools.shard_indexes[0]
    async with pools.transaction(shard, name="test_seed_ledger") as conn:
        for _ in range(5):
            await conn.execute(
                "INSERT INTO applied_events (event_id, applied_at) VALUES (%s, now() - interval '30 days')",
                (new_id(),),
            )
    pruner = RetentionPruner(pools, Retention(batch=2, pause_s=0))
    async with pools.transaction(shard, name="test_one_batch") as conn:
        cursor = await conn.execute(PRUNE_APPLIED_EVENTS, {"keep": timedelta(days=7), "batch": 2})
        assert cursor.rowcount == 2
    assert (await pruner.prune_once())["applied_events"] == 3


async def test_refresh_tokens_go_a_day_after_expiry_or_use(pools: PrimaryPools) -> None:
    shard = pools.shard_indexes[0]
    user = new_id()
    tokens = {  # (expires_at, used_at) -> kept
        ("now() - interval '2 days'", "NULL"): False,
        ("now() + interval '9 days'", "now() - interval '2 days'"): False,
        ("now() + interval '9 days'", "now() - interval '1 hour'"): True,
        ("now() - interval '1 hour'", "NULL"): True,
    }
    async with pools.transaction(shard, name="test_seed_tokens") as conn:
        await conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'A', 'B')", (user,))
        for (expires, used), _ in tokens.items():
            await conn.execute(
                "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, used_at)"
                f" VALUES (%s, %s, %s, %s, {expires}, {used})",
                (new_id(), user, new_id(), new_id().bytes),
            )
    await RetentionPruner(pools, Retention(pause_s=0)).prune_once()
    async with pools.transaction(shard, name="test_read_tokens") as conn:
        cursor = await conn.execute("SELECT count(*) FROM refresh_tokens WHERE user_id = %s", (user,))
        assert await cursor.fetchone() == (sum(tokens.values()),)


async def test_delivered_rows_in_a_fenced_range_are_left_for_after_the_move(pools: PrimaryPools) -> None:
    shard = pools.shard_indexes[0]
    key = uuid.uuid4()
    position = ring_position(str(key))
    async with pools.transaction(shard, name="test_seed_outbox") as conn:
        await conn.execute(INSERT_OUTBOX, (new_id(), f"user:{key}", "-infinity", None))
        await conn.execute(
            "INSERT INTO ring_fence (lo, hi, state, workflow) VALUES (%s, %s, 'moved', 'test-retention')",
            (position, position + 1),
        )
    try:
        deleted = await RetentionPruner(pools, Retention(pause_s=0)).prune_once()
        assert deleted["outbox"] == 0
    finally:
        async with pools.transaction(shard, name="test_unfence") as conn:
            await conn.execute("DELETE FROM ring_fence WHERE workflow = 'test-retention'")
    assert (await RetentionPruner(pools, Retention(pause_s=0)).prune_once())["outbox"] == 1


class _OneShardDown:
    """The pools, with one shard unreachable: its transactions fail as a down shard's do."""

    def __init__(self, pools: PrimaryPools, down: int) -> None:
        self._pools, self._down = pools, down
        self.shard_indexes = pools.shard_indexes

    def shard_name(self, shard: int) -> str:
        return self._pools.shard_name(shard)

    def transaction(self, shard: int, *, name: str):  # type: ignore[no-untyped-def]
        if shard == self._down:
            raise ShardUnavailable(self.shard_name(shard), "primary", "test: down")
        return self._pools.transaction(shard, name=name)


async def test_a_shard_that_fails_does_not_stop_the_others_pruning(
    pools: PrimaryPools, caplog: pytest.LogCaptureFixture
) -> None:
    first, down, *_ = pools.shard_indexes
    for shard in (first, down):
        async with pools.transaction(shard, name="test_seed_ledger") as conn:
            await conn.execute("DELETE FROM applied_events")
            await conn.execute(
                "INSERT INTO applied_events (event_id, applied_at) VALUES (%s, now() - interval '30 days')",
                (new_id(),),
            )
    shards = _OneShardDown(pools, down)
    deleted = await RetentionPruner(shards, Retention(pause_s=0)).prune_once()  # type: ignore[arg-type]
    assert deleted["applied_events"] == 1 and deleted["failed"] == 4  # four tables on the down shard
    assert pools.shard_name(down) in caplog.text
    async with pools.transaction(down, name="test_read_ledger") as conn:
        assert await (await conn.execute("SELECT count(*) FROM applied_events")).fetchone() == (1,)
