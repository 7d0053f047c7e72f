"""Relay handlers that keep both ends of every follow, and the names copied into them, in line.

Each handler reconciles state instead of replaying an operation: it reads the truth where it
lives (the follows row on the follower's shard, the users row on the user's shard) and makes
the copies agree. So a handler applied twice, late, or out of order with other events still
leaves the right state, and the last event to run always sees the final truth (every change
to a truth writes an event, which runs after that change committed). The applied_events
ledger (`first_application`) additionally skips a re-delivered follow event's reverse-edge work.

Large fan-outs (a deleted or renamed user with many followers) run in bounded batches, each
its own transaction: a batch that fails is retried with the event, and the done ones stay done.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

from messenger.domain.events import OutboxEvent
from messenger.domain.ids import new_id
from messenger.storage.follows import delete_follower_copies
from messenger.storage.outbox import first_application
from messenger.storage.relay.runner import Applied
from messenger.storage.shards.transactions import ShardTransactions
from messenger.storage.users import DELETE_USER

BATCH = 1000
"""Rows per clean-up or rename transaction: well inside the statement timeout."""

# -- follow.created / follow.removed --------------------------------------------------------

FORWARD_EDGE = """
SELECT f.id, f.created_at, u.first_name, u.last_name, f.followee_first_name, f.followee_last_name
FROM follows f JOIN users u ON u.id = f.follower_id
WHERE f.follower_id = %(follower)s AND f.followee_id = %(followee)s
"""
# The followee's row, locked: it cannot be deleted or renamed until this transaction (and the
# forward-edge fix nested in it) has committed, so a rename's handler runs after it. FOR NO KEY
# UPDATE, not FOR SHARE: the transaction then updates the same row (followers_count), and two
# relays holding a share lock each deadlocked on that UPDATE. This lock queues them instead.
LOCK_FOLLOWEE = "SELECT first_name, last_name FROM users WHERE id = %(followee)s FOR NO KEY UPDATE"
UPSERT_REVERSE_EDGE = """
WITH put AS (
    INSERT INTO followers (followee_id, follower_id, id, follower_first_name, follower_last_name, created_at)
    VALUES (%(followee)s, %(follower)s, %(id)s, %(first)s, %(last)s, %(created_at)s)
    ON CONFLICT (followee_id, follower_id) DO UPDATE
        SET id = excluded.id, created_at = excluded.created_at,
            follower_first_name = excluded.follower_first_name,
            follower_last_name = excluded.follower_last_name
        WHERE (followers.id, followers.follower_first_name, followers.follower_last_name)
              IS DISTINCT FROM (excluded.id, excluded.follower_first_name, excluded.follower_last_name)
    RETURNING xmax = 0 AS inserted
)
UPDATE users SET followers_count = followers_count + 1
WHERE id = %(followee)s AND EXISTS (SELECT 1 FROM put WHERE inserted)
"""
DELETE_REVERSE_EDGE = """
WITH gone AS (
    DELETE FROM followers WHERE followee_id = %(followee)s AND follower_id = %(follower)s
    RETURNING followee_id
)
UPDATE users SET followers_count = followers_count - 1 FROM gone WHERE users.id = gone.followee_id
"""
DELETE_FORWARD_EDGE = """
WITH gone AS (
    DELETE FROM follows WHERE follower_id = %(follower)s AND followee_id = %(followee)s
    RETURNING follower_id
)
UPDATE users SET following_count = following_count - 1 FROM gone WHERE users.id = gone.follower_id
"""
REFRESH_FORWARD_NAMES = """
UPDATE follows SET followee_first_name = %(first)s, followee_last_name = %(last)s
WHERE follower_id = %(follower)s AND followee_id = %(followee)s
  AND (followee_first_name, followee_last_name) IS DISTINCT FROM (%(first)s, %(last)s)
"""

# -- user.deleted ----------------------------------------------------------------------------

DELETE_EDGES_TO_USER = """
WITH gone AS (
    DELETE FROM follows WHERE (follower_id, followee_id) IN (
        SELECT follower_id, followee_id FROM follows WHERE followee_id = %(user)s LIMIT %(batch)s)
    RETURNING follower_id
),
counted AS (
    UPDATE users SET following_count = following_count - 1 FROM gone WHERE users.id = gone.follower_id
)
SELECT count(*), coalesce(array_agg(follower_id), '{}') FROM gone
"""
DELETE_EDGES_FROM_USER = """
WITH gone AS (
    DELETE FROM followers WHERE (followee_id, follower_id) IN (
        SELECT followee_id, follower_id FROM followers WHERE follower_id = %(user)s LIMIT %(batch)s)
    RETURNING followee_id
),
counted AS (
    UPDATE users SET followers_count = followers_count - 1 FROM gone WHERE users.id = gone.followee_id
)
SELECT count(*), coalesce(array_agg(followee_id), '{}') FROM gone
"""

# -- user.renamed ----------------------------------------------------------------------------

SELECT_NAMES = "SELECT first_name, last_name FROM users WHERE id = %(user)s"
# Keyset batches (each resumes after the last key of the one before, one range scan of
# follows_by_followee / followers_by_follower), so a rename reads each copy once; re-selecting
# "copies still stale" from the start re-read every refreshed row in every batch, O(n^2).
REFRESH_FOLLOWEE_COPIES = """
WITH batch AS (
    SELECT follower_id FROM follows
    WHERE followee_id = %(user)s AND follower_id > %(after)s
    ORDER BY followee_id, follower_id LIMIT %(batch)s
),
fixed AS (
    UPDATE follows f SET followee_first_name = %(first)s, followee_last_name = %(last)s
    FROM batch WHERE f.follower_id = batch.follower_id AND f.followee_id = %(user)s
      AND (f.followee_first_name, f.followee_last_name) IS DISTINCT FROM (%(first)s, %(last)s)
)
SELECT count(*) OVER (), follower_id FROM batch ORDER BY follower_id DESC LIMIT 1
"""
REFRESH_FOLLOWER_COPIES = """
WITH batch AS (
    SELECT followee_id FROM followers
    WHERE follower_id = %(user)s AND followee_id > %(after)s
    ORDER BY follower_id, followee_id LIMIT %(batch)s
),
fixed AS (
    UPDATE followers f SET follower_first_name = %(first)s, follower_last_name = %(last)s
    FROM batch WHERE f.followee_id = batch.followee_id AND f.follower_id = %(user)s
      AND (f.follower_first_name, f.follower_last_name) IS DISTINCT FROM (%(first)s, %(last)s)
)
SELECT count(*) OVER (), followee_id FROM batch ORDER BY followee_id DESC LIMIT 1
"""
NO_KEY = uuid.UUID(int=0)
"""Below every id: a keyset walk's first batch starts at the beginning."""


async def sync_follow(shards: ShardTransactions, follower: uuid.UUID, followee: uuid.UUID,
                      event_id: uuid.UUID | None = None) -> None:
    """Make the followee's end of (follower, followee) match the follower's end.

    - followee gone: drop the forward edge (a follow that raced the followee's deletion);
    - forward edge present: the reverse edge exists with its id, time and follower's names;
    - forward edge absent: no reverse edge.
    Also refreshes the followee's names copied into the forward edge. With `event_id`, the
    reverse-edge work is recorded in the ledger and skipped when the event comes again.
    """
    ids = {"follower": follower, "followee": followee}
    async with shards.transaction_for(follower, name="relay_forward_edge") as conn:
        forward = await _one(conn, FORWARD_EDGE, ids)
    async with shards.transaction_for(followee, name="relay_sync_reverse_edge") as conn:
        followee_names = await _one(conn, LOCK_FOLLOWEE, ids)
        if followee_names is not None and (
            event_id is None or await first_application(conn, event_id, "followers")
        ):
            if forward is None:
                await conn.execute(DELETE_REVERSE_EDGE, ids)
            else:
                follow_id, created_at, first, last = forward[:4]
                await conn.execute(UPSERT_REVERSE_EDGE, {
                    **ids, "id": follow_id, "created_at": created_at, "first": first, "last": last,
                })
        if followee_names is not None and (forward is None or tuple(forward[4:]) == tuple(followee_names)):
            return  # the follower's end is right as it is
        async with shards.transaction_for(follower, name="relay_fix_forward_edge") as source_conn:
            if followee_names is None:
                await source_conn.execute(DELETE_FORWARD_EDGE, ids)
            else:
                first, last = followee_names
                await source_conn.execute(REFRESH_FORWARD_NAMES, {**ids, "first": first, "last": last})


async def sync_reverse_edge(event: OutboxEvent, shards: ShardTransactions) -> None:
    """follow.created / follow.removed: bring the followee's end in line (see sync_follow)."""
    p = event.payload
    await sync_follow(shards, uuid.UUID(p["follower_id"]), uuid.UUID(p["followee_id"]), event.id)


async def remove_deleted_users_follows(event: OutboxEvent, shards: ShardTransactions) -> Applied:
    """user.deleted: on every shard, drop the edges that point at the user, both directions;
    the users whose follow counters that changed are the result (their cached rows go).

    Its own shard lost its rows by cascade; edges there that point at it (a follower on the
    same shard) carry no foreign key and go here like any other shard's.
    """
    user = {"user": uuid.UUID(event.payload["user_id"]), "batch": BATCH}
    counted: set[uuid.UUID] = set()
    for shard in shards.shard_indexes:
        for name, sql in (
            ("relay_delete_edges_to_user", DELETE_EDGES_TO_USER),
            ("relay_delete_edges_from_user", DELETE_EDGES_FROM_USER),
        ):
            await _in_batches(shards, shard, name, sql, user, counted)
    return Applied(users_changed=frozenset(counted))


async def finish_batched_deletion(event: OutboxEvent, shards: ShardTransactions) -> None:
    """user.deleting (storage/follows.py, `start_batched_deletion`): finish a deletion whose API
    call stopped mid-way: the rest of the reverse edges in batches, then the user's cascading
    DELETE with its `user.deleted`. After a deletion that completed, both find nothing."""
    user_id = uuid.UUID(event.payload["user_id"])
    await delete_follower_copies(shards, user_id)
    async with shards.transaction_for(user_id, name="relay_finish_user_deletion") as conn:
        await conn.execute(DELETE_USER, (user_id, new_id()))


async def refresh_renamed_users_copies(
    event: OutboxEvent, shards: ShardTransactions, batch: int = BATCH
) -> None:
    """user.renamed: every copy of the user's names in follow lists takes the current names."""
    user_id = uuid.UUID(event.payload["user_id"])
    async with shards.transaction_for(user_id, name="relay_follow_names") as conn:
        names = await _one(conn, SELECT_NAMES, {"user": user_id})
    if names is None:
        return  # deleted since: user.deleted removes the copies
    params = {"user": user_id, "first": names[0], "last": names[1], "batch": batch}
    for shard in shards.shard_indexes:
        for name, sql in (
            ("relay_refresh_followee_copies", REFRESH_FOLLOWEE_COPIES),
            ("relay_refresh_follower_copies", REFRESH_FOLLOWER_COPIES),
        ):
            await _in_keyset_batches(shards, shard, name, sql, params)


async def _in_batches(
    shards: ShardTransactions, shard: int, name: str, sql: str, params: dict[str, Any],
    changed: set[uuid.UUID],
) -> None:
    """Run a batch statement (returning how many rows it did and the users whose rows it
    changed, added to `changed`) until a batch comes up short."""
    while True:
        async with shards.transaction(shard, name=name) as conn:
            done = await _one(conn, sql, params)
        if done is not None:
            changed.update(done[1])
        if done is None or done[0] < params["batch"]:
            return


async def _in_keyset_batches(
    shards: ShardTransactions, shard: int, name: str, sql: str, params: dict[str, Any]
) -> None:
    """Run a keyset batch statement (returning its row count and last key), each batch after
    the last key of the one before, until a batch comes up short."""
    after = NO_KEY
    while True:
        async with shards.transaction(shard, name=name) as conn:
            done = await _one(conn, sql, {**params, "after": after})
        if done is None or done[0] < params["batch"]:
            return
        after = done[1]


async def _one(conn: AsyncConnection[Any], sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()
