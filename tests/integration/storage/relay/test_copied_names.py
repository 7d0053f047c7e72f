"""Refreshing the names copied into other rows: keyset batches that read each row once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import AsyncConnection

from messenger.cluster.local import LocalCluster
from messenger.domain.events import OutboxEvent
from messenger.domain.ids import new_id
from messenger.storage.relay.follows import refresh_renamed_users_copies
from messenger.storage.relay.messaging import rename_sender_everywhere_on
from messenger.storage.shards.primaries import PrimaryPools
from messenger.storage.shards.transactions import Key

# Heap tuples read from `messages`, by any scan, not yet flushed to the shared statistics: it
# may include earlier transactions of the backend, so a batch's work is the change across it.
MESSAGES_READ = """
SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)
FROM pg_stat_xact_user_tables WHERE relname = 'messages'
"""


class CountingTransactions:
    """The pools' transactions, adding up the message rows each named transaction read."""

    def __init__(self, pools: PrimaryPools) -> None:
        self._pools = pools
        self.batches = 0
        self.rows_read = 0

    @property
    def shard_indexes(self) -> tuple[int, ...]:
        return self._pools.shard_indexes

    def shard_name(self, shard: int) -> str:
        return self._pools.shard_name(shard)

    def shard_for(self, key: Key) -> int:
        return self._pools.shard_for(key)

    def transaction_for(self, key: Key, *, name: str, marks: Sequence[Key] = ()) -> Any:
        return self.transaction(self.shard_for(key), name=name, marks=marks)

    @asynccontextmanager
    async def transaction(
        self, shard: int, *, name: str = "test", marks: Sequence[Key] = ()
    ) -> AsyncIterator[AsyncConnection[Any]]:
        async with self._pools.transaction(shard, name=name, marks=marks) as conn:
            before = await self._messages_read(conn)
            yield conn
            self.batches += 1
            self.rows_read += await self._messages_read(conn) - before

    @staticmethod
    async def _messages_read(conn: AsyncConnection[Any]) -> int:
        row = await (await conn.execute(MESSAGES_READ)).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
async def pools(cluster: LocalCluster) -> AsyncIterator[PrimaryPools]:
    async with PrimaryPools(cluster.topology, max_size=4) as pools:
        yield pools


async def _conversation_with_messages(pools: PrimaryPools, sender: uuid.UUID, count: int) -> uuid.UUID:
    conversation = new_id()
    now = datetime.now(UTC)
    async with pools.transaction_for(conversation, name="test_seed_messages") as conn:
        await conn.execute(
            "INSERT INTO conversations (id, type, title, created_by) VALUES (%s, 'group', 't', %s)",
            (conversation, sender),
        )
        for n in range(1, count + 1):
            await conn.execute(
                "INSERT INTO messages (conversation_id, id, number, seq, sender_id, sender_name, body,"
                " client_message_id, created_at) VALUES (%s, %s, %s, %s, %s, 'Old Name', 'hi', %s, %s)",
                (conversation, new_id(), n, n, sender, f"c{n}", now),
            )
    return conversation


async def test_a_rename_over_many_batches_renames_every_message_reading_each_once(pools: PrimaryPools) -> None:
    sender = new_id()
    conversation = await _conversation_with_messages(pools, sender, 40)
    shard = pools.shard_for(conversation)
    counting = CountingTransactions(pools)
    await rename_sender_everywhere_on(counting, shard, sender, "New Name", batch=4)
    async with pools.transaction(shard, name="test_read_names") as conn:
        cursor = await conn.execute(
            "SELECT sender_name, count(*) FROM messages WHERE sender_id = %s GROUP BY 1", (sender,)
        )
        assert await cursor.fetchall() == [("New Name", 40)]
    assert counting.batches == 11  # 10 full batches and the short one that ends the walk
    # Each batch reads its 4 rows from the index and again to update them: O(n) in all. The
    # old "still stale" re-selection read every renamed row again in every batch (~200 here).
    assert counting.rows_read <= 3 * 40


async def test_a_rename_over_many_batches_refreshes_every_follow_copy(pools: PrimaryPools) -> None:
    renamed, others = new_id(), [new_id() for _ in range(7)]
    shard = pools.shard_for(renamed)
    async with pools.transaction(shard, name="test_seed_follows") as conn:
        for user in (renamed, *others):  # all on one shard: the handler walks every shard alike
            await conn.execute(
                "INSERT INTO users (id, first_name, last_name) VALUES (%s, %s, 'L')",
                (user, "New" if user == renamed else "Other"),
            )
        for other in others:
            await conn.execute(
                "INSERT INTO follows (follower_id, followee_id, id, followee_first_name, followee_last_name)"
                " VALUES (%s, %s, %s, 'Old', 'L')", (other, renamed, new_id()),
            )
            await conn.execute(
                "INSERT INTO followers (followee_id, follower_id, id, follower_first_name, follower_last_name,"
                " created_at) VALUES (%s, %s, %s, 'Old', 'L', now())", (other, renamed, new_id()),
            )
    event = OutboxEvent(new_id(), f"user:{renamed}", "user.renamed", {"user_id": str(renamed)})
    await refresh_renamed_users_copies(event, pools, batch=2)
    async with pools.transaction(shard, name="test_read_copies") as conn:
        cursor = await conn.execute(
            "SELECT (SELECT array_agg(DISTINCT followee_first_name) FROM follows WHERE followee_id = %(u)s),"
            " (SELECT array_agg(DISTINCT follower_first_name) FROM followers WHERE follower_id = %(u)s)",
            {"u": renamed},
        )
        assert await cursor.fetchone() == (["New"], ["New"])
