"""Audit checks of follows: both ends of every edge, the names copied into them, the counters.

Repairs reuse the relay's own reconciliation (`sync_follow`): the follower's end is the truth
for the followee's end, the users row for the copied names and for the edge's existence.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from messenger.storage.audit.runner import SCAN_BATCH, Batch, Finding
from messenger.storage.relay.follows import sync_follow
from messenger.storage.shards.transactions import ShardTransactions

# Keyset scans by primary key, one batch per statement.
SCAN_FOLLOWS = """
SELECT follower_id, followee_id, id, followee_first_name, followee_last_name FROM follows
WHERE (follower_id, followee_id) > (%(a)s, %(b)s)
ORDER BY follower_id, followee_id LIMIT %(batch)s
"""
SCAN_FOLLOWERS = """
SELECT followee_id, follower_id, id, follower_first_name, follower_last_name FROM followers
WHERE (followee_id, follower_id) > (%(a)s, %(b)s)
ORDER BY followee_id, follower_id LIMIT %(batch)s
"""
# One batch's other ends on their shard: does the user exist, and the twin edge?
# Columns: own end, other end, follow id, copied names, user exists, user's names, twin's id.
TWINS_OF_FOLLOWS = """
SELECT t.own, t.other, t.id, t.first, t.last, u.id IS NOT NULL, u.first_name, u.last_name, r.id
FROM unnest(%(own)s::uuid[], %(other)s::uuid[], %(id)s::uuid[], %(first)s::text[], %(last)s::text[])
     AS t(own, other, id, first, last)
LEFT JOIN users u ON u.id = t.other
LEFT JOIN followers r ON r.followee_id = t.other AND r.follower_id = t.own
"""
TWINS_OF_FOLLOWERS = """
SELECT t.own, t.other, t.id, t.first, t.last, u.id IS NOT NULL, u.first_name, u.last_name, f.id
FROM unnest(%(own)s::uuid[], %(other)s::uuid[], %(id)s::uuid[], %(first)s::text[], %(last)s::text[])
     AS t(own, other, id, first, last)
LEFT JOIN users u ON u.id = t.other
LEFT JOIN follows f ON f.follower_id = t.other AND f.followee_id = t.own
"""

SCAN_COUNTS = """
SELECT u.id, u.following_count, u.followers_count,
       (SELECT count(*) FROM follows f WHERE f.follower_id = u.id),
       (SELECT count(*) FROM followers r WHERE r.followee_id = u.id)
FROM users u WHERE u.id > %(a)s ORDER BY u.id LIMIT %(batch)s
"""
# The row lock first (every follow write takes it too), then a fresh snapshot to count in.
LOCK_USER = "SELECT 1 FROM users WHERE id = %(user)s FOR UPDATE"
RECOUNT = """
UPDATE users SET following_count = (SELECT count(*) FROM follows WHERE follower_id = %(user)s),
                 followers_count = (SELECT count(*) FROM followers WHERE followee_id = %(user)s)
WHERE id = %(user)s
"""

_ZERO = uuid.UUID(int=0)


class _EdgeCheck:
    """One end of the follow edges on each shard, checked against the other end's shard."""

    kind: str
    description: str
    scan_sql: str
    twins_sql: str
    own_name: str  # how the findings name the columns
    other_name: str

    async def scan(self, shards: ShardTransactions, shard: int) -> AsyncIterator[Batch]:
        last = (_ZERO, _ZERO)
        while True:
            async with shards.transaction(shard, name=f"audit_{self.kind}_scan") as conn:
                cursor = await conn.execute(self.scan_sql, {"a": last[0], "b": last[1], "batch": SCAN_BATCH})
                rows = await cursor.fetchall()
            if not rows:
                return
            last = (rows[-1][0], rows[-1][1])
            by_shard: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
            for row in rows:
                by_shard[shards.shard_for(row[1])].append(row)
            findings: list[Finding] = []
            for target, group in by_shard.items():
                columns = list(zip(*group, strict=True))
                params = {"own": list(columns[0]), "other": list(columns[1]), "id": list(columns[2]),
                          "first": list(columns[3]), "last": list(columns[4])}
                async with shards.transaction(target, name=f"audit_{self.kind}_targets") as conn:
                    cursor = await conn.execute(self.twins_sql, params)
                    for found in await cursor.fetchall():
                        findings.extend(self._judge(*found))
            yield Batch(len(rows), findings)

    def _judge(self, own: uuid.UUID, other: uuid.UUID, follow_id: uuid.UUID, first: str, last: str,
               exists: bool, real_first: str | None, real_last: str | None,
               twin_id: uuid.UUID | None) -> list[Finding]:
        ref = {self.own_name: str(own), self.other_name: str(other)}
        if not exists:
            return [Finding("dangling", ref, f"{self.other_name} does not exist")]
        out = []
        if twin_id is None:
            out.append(Finding("missing_twin", ref, "no edge at the other end"))
        elif twin_id != follow_id:
            out.append(Finding("disagrees", ref, f"follow id {follow_id} here, {twin_id} there"))
        if (first, last) != (real_first, real_last):
            out.append(Finding("stale_copy", ref, f"copy {first} {last!s}, user {real_first} {real_last}"))
        return out

    def _pair(self, finding: Finding) -> tuple[uuid.UUID, uuid.UUID]:
        raise NotImplementedError

    async def repair(self, shards: ShardTransactions, shard: int, finding: Finding) -> bool:
        await sync_follow(shards, *self._pair(finding))
        return True


class FollowsCheck(_EdgeCheck):
    kind = "follows"
    description = "follow edges (follower's shard) vs the followee and its reverse edge"
    scan_sql = SCAN_FOLLOWS
    twins_sql = TWINS_OF_FOLLOWS
    own_name, other_name = "follower_id", "followee_id"

    def _pair(self, finding: Finding) -> tuple[uuid.UUID, uuid.UUID]:
        return uuid.UUID(finding.ref["follower_id"]), uuid.UUID(finding.ref["followee_id"])


class FollowersCheck(_EdgeCheck):
    kind = "followers"
    description = "reverse edges (followee's shard) vs the follower and its follow edge"
    scan_sql = SCAN_FOLLOWERS
    twins_sql = TWINS_OF_FOLLOWERS
    own_name, other_name = "followee_id", "follower_id"

    def _pair(self, finding: Finding) -> tuple[uuid.UUID, uuid.UUID]:
        return uuid.UUID(finding.ref["follower_id"]), uuid.UUID(finding.ref["followee_id"])


class FollowCountsCheck:
    kind = "follow_counts"
    description = "following/followers counters on users rows vs the edges on the same shard"

    async def scan(self, shards: ShardTransactions, shard: int) -> AsyncIterator[Batch]:
        last = _ZERO
        while True:
            async with shards.transaction(shard, name=f"audit_{self.kind}_scan") as conn:
                cursor = await conn.execute(SCAN_COUNTS, {"a": last, "batch": SCAN_BATCH})
                rows = await cursor.fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield Batch(len(rows), [
                Finding("count_mismatch", {"user_id": str(user_id)},
                        f"following {following} (rows {following_rows}), "
                        f"followers {followers} (rows {followers_rows})")
                for user_id, following, followers, following_rows, followers_rows in rows
                if (following, followers) != (following_rows, followers_rows)
            ])

    async def repair(self, shards: ShardTransactions, shard: int, finding: Finding) -> bool:
        user = {"user": uuid.UUID(finding.ref["user_id"])}
        async with shards.transaction(shard, name=f"audit_{self.kind}_repair") as conn:
            await conn.execute(LOCK_USER, user)
            await conn.execute(RECOUNT, user)
        return True
