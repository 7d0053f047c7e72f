"""Accounts on their user's shard: the user, account and link rows, refresh tokens, deletion.

Every method is one transaction on one shard. Events that other shards must act on (claims
to confirm or free, a deleted user to clean up after) go into the same transaction's outbox.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors

from messenger.domain.accounts import Account
from messenger.domain.errors import Conflict, NotFound
from messenger.domain.ids import new_id
from messenger.storage.cache.users import UserCache
from messenger.storage.follows import start_batched_deletion
from messenger.storage.outbox import append_event
from messenger.storage.shards.fencing import replayed_when_fenced
from messenger.storage.shards.transactions import ShardTransactions
from messenger.storage.users import DELETE_USER

INSERT_USER = """
INSERT INTO users (id, first_name, last_name) VALUES (%s, %s, %s)
RETURNING created_at, updated_at
"""
INSERT_ACCOUNT = """
INSERT INTO accounts (id, user_id, username, email, password_hash) VALUES (%s, %s, %s, %s, %s)
"""
INSERT_LINK = "INSERT INTO users_accounts (user_id, account_id) VALUES (%s, %s)"
ACCOUNT_COLUMNS = "a.id, a.user_id, a.username, a.email, a.created_at, a.updated_at"
SELECT_BY_USER = f"""
SELECT {ACCOUNT_COLUMNS}, a.password_hash, u.first_name, u.last_name
FROM accounts a JOIN users u ON u.id = a.user_id
WHERE a.user_id = %s
"""
SELECT_FOR_LOGIN = {
    kind: f"SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a WHERE a.user_id = %s AND a.{kind} = %s"
    for kind in ("username", "email")
}
# A rename to the names the user already has changes nothing: no row version, no updated_at,
# no user.renamed (whose handlers would rewrite every copy of the names on every shard).
UPDATE_NAMES = """
UPDATE users SET first_name = COALESCE(%(first)s, first_name), last_name = COALESCE(%(last)s, last_name),
                 updated_at = now()
WHERE id = %(id)s
  AND (first_name, last_name) IS DISTINCT FROM (COALESCE(%(first)s, first_name), COALESCE(%(last)s, last_name))
"""
UPDATE_LOGIN = "UPDATE accounts SET username = %s, email = %s, updated_at = now() WHERE user_id = %s"
SELECT_LOGIN_FOR_UPDATE = "SELECT username, email FROM accounts WHERE user_id = %s FOR UPDATE"
UPDATE_PASSWORD = "UPDATE accounts SET password_hash = %s, updated_at = now() WHERE user_id = %s"

INSERT_REFRESH = """
INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))
"""
SELECT_REFRESH = """
SELECT id, user_id, family_id, expires_at < now(), used_at IS NOT NULL, revoked_at IS NOT NULL
FROM refresh_tokens WHERE token_hash = %s
FOR UPDATE
"""
MARK_REFRESH_USED = "UPDATE refresh_tokens SET used_at = now() WHERE id = %s"
REVOKE_FAMILY = "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = %s AND revoked_at IS NULL"
REVOKE_ALL_FOR_USER = """
UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL
RETURNING family_id
"""


@dataclass(frozen=True, slots=True)
class NewAccount:
    user_id: uuid.UUID
    account_id: uuid.UUID
    first_name: str
    last_name: str
    username: str
    email: str
    password_hash: str
    reservation_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class StoredAccount:
    account: Account
    password_hash: str
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    family_id: uuid.UUID
    expired: bool
    used: bool
    revoked: bool


def _taken() -> Conflict:
    """An account on this shard already has the value: the claims should have said so (one left
    behind by a failure); the client sees the usual 409, never a 500."""
    return Conflict("username or email is already taken", details={"fields": ["username", "email"]})


def _account(row: tuple[Any, ...]) -> Account:
    return Account(id=row[0], user_id=row[1], username=row[2], email=row[3], created_at=row[4], updated_at=row[5])


class AccountStore:
    def __init__(self, shards: ShardTransactions, user_cache: UserCache | None = None) -> None:
        self.shards = shards
        self._user_cache = user_cache  # names and deletions change users rows

    async def _user_written(self, user_id: uuid.UUID) -> None:
        if self._user_cache is not None:
            await self._user_cache.written(user_id)

    @replayed_when_fenced
    async def create(self, new: NewAccount) -> tuple[Account, datetime]:
        """User, account and link in one transaction, with the event that confirms the claims."""
        async with self.shards.transaction_for(new.user_id, name="create_account", marks=[new.user_id]) as conn:
            cursor = await conn.execute(INSERT_USER, (new.user_id, new.first_name, new.last_name))
            created_at, updated_at = await cursor.fetchone()  # type: ignore[misc]
            try:
                await conn.execute(
                    INSERT_ACCOUNT, (new.account_id, new.user_id, new.username, new.email, new.password_hash)
                )
            except pg_errors.UniqueViolation:
                raise _taken() from None
            await conn.execute(INSERT_LINK, (new.user_id, new.account_id))
            await append_event(conn, f"user:{new.user_id}", "account.registered", {
                "user_id": str(new.user_id), "username": new.username, "email": new.email,
                "reservation_id": str(new.reservation_id),
            })
        account = Account(new.account_id, new.user_id, new.username, new.email, created_at, updated_at)
        return account, updated_at

    async def get(self, user_id: uuid.UUID) -> StoredAccount:
        async with self.shards.transaction_for(user_id, name="get_account") as conn:
            cursor = await conn.execute(SELECT_BY_USER, (user_id,))
            row = await cursor.fetchone()
        if row is None:
            raise NotFound("account not found")
        return StoredAccount(_account(row), row[6], row[7], row[8])

    async def for_login(self, user_id: uuid.UUID, kind: str, value: str) -> StoredAccount | None:
        async with self.shards.transaction_for(user_id, name="account_for_login") as conn:
            cursor = await conn.execute(SELECT_FOR_LOGIN[kind], (user_id, value))
            row = await cursor.fetchone()
        return None if row is None else StoredAccount(_account(row), row[6])

    async def update_names(self, user_id: uuid.UUID, first_name: str | None, last_name: str | None) -> None:
        try:
            await self._update_names(user_id, first_name, last_name)
        finally:
            await self._user_written(user_id)

    @replayed_when_fenced
    async def _update_names(self, user_id: uuid.UUID, first_name: str | None, last_name: str | None) -> None:
        async with self.shards.transaction_for(user_id, name="update_account_names", marks=[user_id]) as conn:
            cursor = await conn.execute(UPDATE_NAMES, {"first": first_name, "last": last_name, "id": user_id})
            if cursor.rowcount == 0:
                return  # the same names (or no such user): nothing to tell other shards
            await append_event(conn, f"user:{user_id}", "user.renamed", {
                "user_id": str(user_id), "first_name": first_name, "last_name": last_name,
            })

    @replayed_when_fenced
    async def change_login(
        self, user_id: uuid.UUID, username: str, email: str, reservation_id: uuid.UUID
    ) -> tuple[str, str]:
        """Set the account's username and email; the event frees the old values' claims."""
        async with self.shards.transaction_for(user_id, name="change_login") as conn:
            cursor = await conn.execute(SELECT_LOGIN_FOR_UPDATE, (user_id,))
            row = await cursor.fetchone()
            if row is None:
                raise NotFound("account not found")
            old_username, old_email = row
            try:
                await conn.execute(UPDATE_LOGIN, (username, email, user_id))
            except pg_errors.UniqueViolation:
                raise _taken() from None
            await append_event(conn, f"user:{user_id}", "account.login_changed", {
                "user_id": str(user_id), "reservation_id": str(reservation_id),
                "username": username, "email": email,
                "old_username": old_username, "old_email": old_email,
            })
        return old_username, old_email

    @replayed_when_fenced
    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> set[uuid.UUID]:
        """Set the hash and revoke every refresh token; returns the sessions (families) ended."""
        async with self.shards.transaction_for(user_id, name="set_password") as conn:
            await conn.execute(UPDATE_PASSWORD, (password_hash, user_id))
            cursor = await conn.execute(REVOKE_ALL_FOR_USER, (user_id,))
            return {row[0] for row in await cursor.fetchall()}

    async def delete_user(self, user_id: uuid.UUID) -> None:
        """Delete the user and, by cascade, everything of theirs on this shard; the
        `user.deleted` event written with it cleans up the other shards. Many followers'
        reverse edges go in batches first (storage/follows.py, `start_batched_deletion`)."""
        try:
            batched = await start_batched_deletion(self.shards, user_id)
            async with self.shards.transaction_for(user_id, name="delete_account_user", marks=[user_id]) as conn:
                cursor = await conn.execute(DELETE_USER, (user_id, new_id()))
                if await cursor.fetchone() is None and not batched:
                    raise NotFound("user not found")
        finally:
            await self._user_written(user_id)

    # -- refresh tokens --------------------------------------------------------------------

    @replayed_when_fenced
    async def add_refresh(
        self, user_id: uuid.UUID, family_id: uuid.UUID, token_id: uuid.UUID, token_hash: bytes, ttl_s: int
    ) -> None:
        async with self.shards.transaction_for(user_id, name="add_refresh_token") as conn:
            await conn.execute(INSERT_REFRESH, (token_id, user_id, family_id, token_hash, ttl_s))

    @replayed_when_fenced
    async def rotate_refresh(
        self, user_id: uuid.UUID, token_hash: bytes, new_id: uuid.UUID, new_hash: bytes, ttl_s: int
    ) -> RefreshRecord | None:
        """Spend a refresh token and store its successor, atomically.

        Returns the spent token's record; when it was already used or revoked (a replay), the
        whole family is revoked and no successor is stored. None when no such token exists.
        """
        async with self.shards.transaction_for(user_id, name="rotate_refresh_token") as conn:
            cursor = await conn.execute(SELECT_REFRESH, (token_hash,))
            row = await cursor.fetchone()
            if row is None or row[1] != user_id:
                return None
            record = RefreshRecord(*row)
            if record.used or record.revoked:
                await conn.execute(REVOKE_FAMILY, (record.family_id,))
                return record
            if record.expired:
                return record
            await conn.execute(MARK_REFRESH_USED, (record.id,))
            await conn.execute(INSERT_REFRESH, (new_id, user_id, record.family_id, new_hash, ttl_s))
            return record

    @replayed_when_fenced
    async def revoke_refresh(self, user_id: uuid.UUID, token_hash: bytes) -> uuid.UUID | None:
        """Revoke the token's whole family; returns the family (the session), None if unknown."""
        async with self.shards.transaction_for(user_id, name="revoke_refresh_token") as conn:
            cursor = await conn.execute(SELECT_REFRESH, (token_hash,))
            row = await cursor.fetchone()
            if row is None or row[1] != user_id:
                return None
            await conn.execute(REVOKE_FAMILY, (row[2],))
            return row[2]  # type: ignore[no-any-return]

