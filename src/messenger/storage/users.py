"""The users table: one row per user, on the shard its id hashes to."""

from __future__ import annotations

import asyncio
import heapq
import uuid
from collections.abc import Iterable
from typing import Any

from messenger.domain.ids import new_id
from messenger.domain.users import Order, User
from messenger.storage.cache.users import UserCache
from messenger.storage.follows import start_batched_deletion
from messenger.storage.shards.router import ShardRouter

_COLUMNS = "id, first_name, last_name, created_at, updated_at, following_count, followers_count"

INSERT_USER = (
    f"INSERT INTO users (id, first_name, last_name) VALUES (%s, %s, %s) RETURNING {_COLUMNS}"
)
SELECT_USER = f"SELECT {_COLUMNS} FROM users WHERE id = %s"
# A rename changes names that other shards keep copies of (follow lists), so when a name
# really changes the same statement writes `user.renamed`, whose handlers refresh the copies.
# `old` reads the row before the update (and locks it); the event carries only the id: its
# handlers read the names at the source when they run, so events never race each other.
_RENAME = """
WITH old AS (SELECT first_name, last_name FROM users WHERE id = %(id)s FOR UPDATE),
new AS (
    UPDATE users SET first_name = {first}, last_name = {last}, updated_at = now()
    FROM old WHERE id = %(id)s
    RETURNING users.*, (users.first_name, users.last_name) IS DISTINCT FROM (old.first_name, old.last_name) AS renamed
),
event AS (
    INSERT INTO outbox (id, aggregate, type, payload)
    SELECT %(event_id)s, 'user:' || id, 'user.renamed', jsonb_build_object('user_id', id)
    FROM new WHERE renamed
)
SELECT {columns} FROM new
"""
UPDATE_USER = _RENAME.format(first="%(first)s", last="%(last)s", columns=_COLUMNS)
# PATCH: a NULL parameter keeps the column as it is.
PATCH_USER = _RENAME.format(
    first="coalesce(%(first)s, old.first_name)", last="coalesce(%(last)s, old.last_name)",
    columns=_COLUMNS,
)
# Deleting a user cascades (in-shard foreign keys) to everything of theirs on this shard, and
# the same statement writes the `user.deleted` event that cleans up the other shards.
DELETE_USER = """
WITH gone AS (DELETE FROM users WHERE id = %s RETURNING id)
INSERT INTO outbox (id, aggregate, type, payload)
SELECT %s, 'user:' || id, 'user.deleted', jsonb_build_object('user_id', id) FROM gone
RETURNING 1
"""
HAS_ACCOUNT = "SELECT EXISTS (SELECT 1 FROM accounts WHERE user_id = %s)"
# Keyset pages, per shard; the first page has no bound. id is the (hash-partitioned) primary
# key, so each is an index scan per partition merged by the planner (Merge Append).
LIST_USERS_ASC = f"SELECT {_COLUMNS} FROM users ORDER BY id LIMIT %s"
LIST_USERS_ASC_AFTER = f"SELECT {_COLUMNS} FROM users WHERE id > %s ORDER BY id LIMIT %s"
LIST_USERS_DESC = f"SELECT {_COLUMNS} FROM users ORDER BY id DESC LIMIT %s"
LIST_USERS_DESC_AFTER = f"SELECT {_COLUMNS} FROM users WHERE id < %s ORDER BY id DESC LIMIT %s"
COUNT_USERS = "SELECT count(*) FROM users"
SELECT_NAMES = "SELECT id, first_name, last_name FROM users WHERE id = ANY(%s)"


def _user(row: tuple[Any, ...]) -> User:
    return User(*row)


class UserStore:
    def __init__(self, router: ShardRouter, cache: UserCache | None = None) -> None:
        self._router = router
        self._cache = cache

    def shard_of(self, user_id: uuid.UUID) -> int:
        return self._router.shard_for(user_id)

    async def add(self, user_id: uuid.UUID, first_name: str, last_name: str) -> tuple[User, str | None]:
        written = await self._router.write_key(
            user_id, INSERT_USER, (user_id, first_name, last_name), name="add_user"
        )
        return _user(written.rows[0]), written.token

    async def get(self, user_id: uuid.UUID, *, token: str | None = None) -> User | None:
        """The user, from this worker's cache when that cannot be older than what the caller
        must see: a consistency token or a recent write of the key (its freshness marker)
        sends the read to the database, and such a read fills nothing."""
        cache = self._cache
        if cache is None or token is not None or not cache.usable:
            return await self._read(user_id, token)
        hit, cached = cache.get(user_id)
        if hit:
            if cached is not None and not await self._router.recently_written(user_id):
                return cached
            return await self._read(user_id, None)
        seen = cache.generation(user_id)  # before the read: a write meanwhile voids the fill
        if await self._router.recently_written(user_id):
            return await self._read(user_id, None)
        user = await self._read(user_id, None)
        if user is not None:
            cache.fill(user_id, user, seen)
        return user

    async def _read(self, user_id: uuid.UUID, token: str | None) -> User | None:
        rows = await self._router.read_key(user_id, SELECT_USER, (user_id,), name="get_user", token=token)
        return _user(rows[0]) if rows else None

    async def written(self, user_id: uuid.UUID) -> None:
        """Tell the read cache (here and on every worker) that the user's row changed."""
        if self._cache is not None:
            await self._cache.written(user_id)

    async def replace(
        self, user_id: uuid.UUID, first_name: str, last_name: str
    ) -> tuple[User | None, str | None]:
        return await self._update(UPDATE_USER, "replace_user", user_id, first_name, last_name)

    async def patch(
        self, user_id: uuid.UUID, first_name: str | None, last_name: str | None
    ) -> tuple[User | None, str | None]:
        return await self._update(PATCH_USER, "patch_user", user_id, first_name, last_name)

    async def _update(
        self, sql: str, name: str, user_id: uuid.UUID, first_name: str | None, last_name: str | None
    ) -> tuple[User | None, str | None]:
        params = {"first": first_name, "last": last_name, "id": user_id, "event_id": new_id()}
        try:
            written = await self._router.write_key(user_id, sql, params, name=name)
        finally:
            await self.written(user_id)  # also when the outcome is unknown (a lost COMMIT reply)
        return (_user(written.rows[0]) if written.rows else None), written.token

    async def remove(self, user_id: uuid.UUID) -> tuple[bool, str | None]:
        # A user with many followers loses their reverse edges in batches first (storage/follows.py);
        # if the relay finished that deletion meanwhile, it is still this call's deletion.
        try:
            batched = await start_batched_deletion(self._router, user_id)
            written = await self._router.write_key(user_id, DELETE_USER, (user_id, new_id()), name="remove_user")
        finally:
            await self.written(user_id)
        return bool(written.rows) or batched, written.token

    async def has_account(self, user_id: uuid.UUID) -> bool:
        """Whether the user signs in (a profile-only user has no account)."""
        rows = await self._router.read_key(user_id, HAS_ACCOUNT, (user_id,), name="user_has_account")
        return bool(rows and rows[0][0])

    async def page(self, after: uuid.UUID | None, limit: int, order: Order) -> list[User]:
        """Up to `limit` users past `after` in id order, over all shards.

        Each shard returns its own first `limit` rows past the bound; the global first `limit`
        are among them, so a k-way merge of the sorted per-shard lists finds them (a user seen
        on two shards, mid-move, counts once).
        """
        if order == "asc":
            sql, params = (LIST_USERS_ASC, (limit,)) if after is None else (
                LIST_USERS_ASC_AFTER, (after, limit))
        else:
            sql, params = (LIST_USERS_DESC, (limit,)) if after is None else (
                LIST_USERS_DESC_AFTER, (after, limit))
        per_shard = await self._router.read_everywhere(sql, params, name="list_users")
        merged: Iterable[tuple[Any, ...]] = heapq.merge(
            *per_shard, key=lambda row: row[0], reverse=order == "desc"
        )
        out: list[User] = []
        last = None
        for row in merged:
            # During a shard move a user is on its source and its target at once (the copy runs
            # ahead of the switch): equal ids come out of the merge side by side, keep one.
            if row[0] == last:
                continue
            last = row[0]
            out.append(_user(row))
            if len(out) == limit:
                break
        return out

    async def names(self, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        """(first, last) name of each of these users that exists, one query per shard in parallel.

        Replicas answer first; ids they do not know are asked of their primary, so a user
        created a moment ago is found (an application-level foreign key check must not miss it).
        """
        by_shard: dict[int, list[uuid.UUID]] = {}
        for user_id in user_ids:
            by_shard.setdefault(self.shard_of(user_id), []).append(user_id)
        shards = list(by_shard)
        found: dict[uuid.UUID, tuple[str, str]] = {}
        results = await asyncio.gather(
            *(self._router.read(s, SELECT_NAMES, (by_shard[s],), name="user_names") for s in shards)
        )
        for rows in results:
            found.update({row[0]: (row[1], row[2]) for row in rows})
        for shard in shards:
            missing = [u for u in by_shard[shard] if u not in found]
            if missing:
                async with self._router.transaction(shard, name="user_names_on_primary") as conn:
                    cursor = await conn.execute(SELECT_NAMES, (missing,))
                    found.update({row[0]: (row[1], row[2]) for row in await cursor.fetchall()})
        return found

    async def count_on_shard(self, shard: int) -> int:
        """Exact user count of one shard, from its replica when it can (stats: a shard that
        cannot answer raises ShardUnavailable, and the others still count)."""
        rows = await self._router.read(shard, COUNT_USERS, (), name="count_users")
        return int(rows[0][0])

    async def count_per_shard(self) -> list[int]:
        """Exact user count of every shard (a full count; for stats, not the hot path)."""
        return [rows[0][0] for rows in await self._router.read_everywhere(COUNT_USERS, (), name="count_users")]
