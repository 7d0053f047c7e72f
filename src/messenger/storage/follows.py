"""Follow edges: `follows` on the follower's shard, `followers` on the followee's shard.

The request path writes only the follower's end, in one statement that also moves the
follower's counter and writes the event (`follow.created` / `follow.removed`) from which the
relay brings the followee's end in line (storage/relay/follows.py). Each listing is one query
on one shard. docs/follows.md explains the design.
"""

from __future__ import annotations

import uuid
from typing import Any

from messenger.domain.follows import Follow, FollowEntry
from messenger.domain.ids import new_id
from messenger.storage.cache.users import UserCache
from messenger.storage.shards.router import ShardRouter
from messenger.storage.shards.transactions import ShardTransactions

SELECT_NAMES = "SELECT first_name, last_name FROM users WHERE id = %s"

# `me` makes a follow by a user that no longer exists a no-op (the token outlived its user).
# A repeated follow conflicts on the primary key and changes nothing, so it writes no event.
FOLLOW = """
WITH me AS (SELECT id FROM users WHERE id = %(follower)s),
added AS (
    INSERT INTO follows (follower_id, followee_id, id, followee_first_name, followee_last_name)
    SELECT id, %(followee)s, %(follow_id)s, %(first)s, %(last)s FROM me
    ON CONFLICT (follower_id, followee_id) DO NOTHING
    RETURNING created_at
),
counted AS (
    UPDATE users SET following_count = following_count + 1
    WHERE id = %(follower)s AND EXISTS (SELECT 1 FROM added)
),
event AS (
    INSERT INTO outbox (id, aggregate, type, payload)
    SELECT %(event_id)s, 'user:' || %(follower)s, 'follow.created',
           jsonb_build_object('follower_id', %(follower)s, 'followee_id', %(followee)s)
    FROM added
)
SELECT EXISTS (SELECT 1 FROM me),
       EXISTS (SELECT 1 FROM added),
       coalesce((SELECT created_at FROM added),
                (SELECT created_at FROM follows
                 WHERE follower_id = %(follower)s AND followee_id = %(followee)s),
                now())
"""
UNFOLLOW = """
WITH removed AS (
    DELETE FROM follows WHERE follower_id = %(follower)s AND followee_id = %(followee)s
    RETURNING id
),
counted AS (
    UPDATE users SET following_count = following_count - 1
    WHERE id = %(follower)s AND EXISTS (SELECT 1 FROM removed)
),
event AS (
    INSERT INTO outbox (id, aggregate, type, payload)
    SELECT %(event_id)s, 'user:' || %(follower)s, 'follow.removed',
           jsonb_build_object('follower_id', %(follower)s, 'followee_id', %(followee)s)
    FROM removed
)
SELECT EXISTS (SELECT 1 FROM removed)
"""

# Listings, newest follow first. The lateral join answers "no such user" (no row) and "no
# follows" (one row of NULLs) in the same single query as the page itself.
_PAGE = """
SELECT f.other_id, f.first_name, f.last_name, f.created_at, f.id
FROM users u
LEFT JOIN LATERAL (
    SELECT {other} AS other_id, {first} AS first_name, {last} AS last_name, created_at, id
    FROM {table} WHERE {own} = u.id {bound}
    ORDER BY id DESC LIMIT %(limit)s
) f ON true
WHERE u.id = %(user)s
"""
FOLLOWING_PAGE, FOLLOWING_PAGE_AFTER, FOLLOWERS_PAGE, FOLLOWERS_PAGE_AFTER = (
    _PAGE.format(table=table, own=own, other=other, first=f"{prefix}_first_name",
                 last=f"{prefix}_last_name", bound=bound)
    for table, own, other, prefix in (
        ("follows", "follower_id", "followee_id", "followee"),
        ("followers", "followee_id", "follower_id", "follower"),
    )
    for bound in ("", "AND id < %(after)s")
)


def _entries(rows: list[tuple[Any, ...]]) -> list[FollowEntry] | None:
    if not rows:
        return None
    return [FollowEntry(*row) for row in rows if row[0] is not None]


class FollowStore:
    """The request path: one statement per call, on one shard."""

    def __init__(self, router: ShardRouter, user_cache: UserCache | None = None) -> None:
        self._router = router
        self._user_cache = user_cache  # following_count is in the follower's users row

    async def _follower_written(self, follower_id: uuid.UUID) -> None:
        if self._user_cache is not None:
            await self._user_cache.written(follower_id)

    async def names(self, user_id: uuid.UUID) -> tuple[str, str] | None:
        """The user's names, read on its shard (read-your-writes); None if there is no user."""
        rows = await self._router.read_key(user_id, SELECT_NAMES, (user_id,), name="follow_names")
        return (rows[0][0], rows[0][1]) if rows else None

    async def follow(
        self, follower_id: uuid.UUID, followee_id: uuid.UUID, followee_names: tuple[str, str]
    ) -> Follow | None:
        """Add the edge on the follower's shard; None when the follower does not exist."""
        params = {
            "follower": str(follower_id), "followee": str(followee_id), "follow_id": new_id(),
            "first": followee_names[0], "last": followee_names[1], "event_id": new_id(),
        }
        try:
            written = await self._router.write_key(follower_id, FOLLOW, params, name="follow")
        finally:
            await self._follower_written(follower_id)
        follower_exists, created, created_at = written.rows[0]
        if not follower_exists:
            return None
        return Follow(follower_id, followee_id, created_at, created)

    async def unfollow(self, follower_id: uuid.UUID, followee_id: uuid.UUID) -> bool:
        params = {"follower": str(follower_id), "followee": str(followee_id), "event_id": new_id()}
        try:
            written = await self._router.write_key(follower_id, UNFOLLOW, params, name="unfollow")
        finally:
            await self._follower_written(follower_id)
        return bool(written.rows[0][0])

    async def following(
        self, user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> list[FollowEntry] | None:
        """Whom the user follows, newest first; None when there is no such user."""
        return await self._page("following_page", FOLLOWING_PAGE, FOLLOWING_PAGE_AFTER, user_id, after, limit)

    async def followers(
        self, user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> list[FollowEntry] | None:
        """Who follows the user, newest first (as far as the relay has come)."""
        return await self._page("followers_page", FOLLOWERS_PAGE, FOLLOWERS_PAGE_AFTER, user_id, after, limit)

    async def _page(
        self, name: str, first: str, later: str, user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> list[FollowEntry] | None:
        params = {"user": user_id, "after": after, "limit": limit}
        rows = await self._router.read_key(user_id, first if after is None else later, params, name=name)
        return _entries(rows)


# -- deleting a user with many followers -------------------------------------------------------

DELETION_BATCH = 1000
"""Reverse edges per transaction when a user is deleted: well inside the statement timeout."""
FINISH_DELETION_AFTER_S = 60
"""When the relay finishes a batched deletion that its API call did not (a crash mid-way)."""
# The reverse edges on the user's own shard (`followers`, one per follower) would otherwise all
# go in the user's cascading DELETE: one statement, one transaction, for 100k followers longer
# than the statement timeout, every time. A user with more than a batch of them first gets an
# intent event (its own aggregate, so the `user.deleted` that follows is not held behind it, and
# due only later, so the relay does not race the API call), then loses them a batch at a time,
# keyset by follower_id, the user's followers_count kept in step; the cascade takes what is left.
START_BATCHED_DELETION = """
INSERT INTO outbox (id, aggregate, type, payload, next_attempt_at)
SELECT %(event)s, 'user-deletion:' || id, 'user.deleting', jsonb_build_object('user_id', id),
       now() + make_interval(secs => %(after_s)s)
FROM users WHERE id = %(user)s AND followers_count > %(batch)s
RETURNING 1
"""
DELETE_FOLLOWER_COPIES = """
WITH batch AS (
    SELECT follower_id FROM followers
    WHERE followee_id = %(user)s AND follower_id > %(after)s
    ORDER BY followee_id, follower_id LIMIT %(batch)s
),
gone AS (  -- by primary key, whatever the planner thinks of a just-seeded table's size
    DELETE FROM followers
    WHERE followee_id = %(user)s AND follower_id = ANY (ARRAY(SELECT follower_id FROM batch))
    RETURNING 1
),
counted AS (
    UPDATE users SET followers_count = greatest(followers_count - (SELECT count(*) FROM gone), 0)
    WHERE id = %(user)s
)
SELECT count(*) OVER (), follower_id FROM batch ORDER BY follower_id DESC LIMIT 1
"""
_NO_KEY = uuid.UUID(int=0)


async def start_batched_deletion(shards: ShardTransactions, user_id: uuid.UUID,
                                 batch: int = DELETION_BATCH) -> bool:
    """Before deleting a user: with more than `batch` followers, record the intent (so the relay
    finishes the deletion if this process does not) and remove the reverse edges in batches.
    True when it did; the caller's DELETE then cascades over what is left."""
    params = {"user": user_id, "event": new_id(), "batch": batch, "after_s": FINISH_DELETION_AFTER_S}
    async with shards.transaction_for(user_id, name="start_batched_user_deletion") as conn:
        started = await (await conn.execute(START_BATCHED_DELETION, params)).fetchone() is not None
    if started:
        await delete_follower_copies(shards, user_id, batch)
    return started


async def delete_follower_copies(shards: ShardTransactions, user_id: uuid.UUID,
                                 batch: int = DELETION_BATCH) -> int:
    """Remove the user's reverse edges on their shard, `batch` per transaction; idempotent
    (a batch removes what is still there). Returns how many went."""
    after, total = _NO_KEY, 0
    while True:
        async with shards.transaction_for(user_id, name="delete_follower_copies") as conn:
            row = await (await conn.execute(
                DELETE_FOLLOWER_COPIES, {"user": user_id, "after": after, "batch": batch})).fetchone()
        if row is None:
            return total
        done: int = row[0]
        total += done
        if done < batch:
            return total
        after = row[1]
