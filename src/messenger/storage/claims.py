"""Global uniqueness of usernames and emails: claim rows on the shard of the claimed value.

The protocol (README, "Registration without a distributed transaction"):

1. `reserve` a pending claim (with an expiry) for each value, on the value's shard. The
   value is the primary key there, so of two racing registrations exactly one gets the row.
2. Write the account on the user's shard, with an `account.registered` event in its outbox.
3. `confirm` the claims (directly, and again by the relay from that event).

A crash leaves pending claims behind. Once expired, `resolve` decides each by asking the
user's shard whether an account holds the value: if so the claim is confirmed, otherwise it is
deleted. So a name is never taken forever, and an account never loses its name. `reserve` runs
the same resolution when it meets an expired claim, so a free name is usable at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import AsyncConnection

from messenger.domain.errors import Conflict
from messenger.storage.shards.transactions import ShardTransactions

ClaimKind = Literal["username", "email"]
KINDS: tuple[ClaimKind, ...] = ("username", "email")
PENDING_TTL_S = 120
"""How long a registration may take before its claims count as abandoned. Requests give up
far sooner (their database calls time out in seconds), so no live registration outlasts it."""


@dataclass(frozen=True, slots=True)
class ClaimSql:
    """The statements for one kind of claim; table and column names are fixed, never input."""

    reserve: str
    lookup: str
    confirm: str
    delete: str
    expired: str
    account_holds: str
    release_for_user: str
    release_all_for_user: str


def _sql(kind: ClaimKind) -> ClaimSql:
    table = f"{kind}_claims"
    return ClaimSql(
        reserve=f"""
            INSERT INTO {table} ({kind}, user_id, reservation_id, state, expires_at)
            VALUES (%s, %s, %s, 'pending', now() + make_interval(secs => %s))
            ON CONFLICT ({kind}) DO NOTHING
            RETURNING 1""",
        lookup=f"SELECT user_id, reservation_id, state, expires_at < now() FROM {table} WHERE {kind} = %s",
        confirm=f"""
            UPDATE {table} SET state = 'confirmed', expires_at = NULL
            WHERE {kind} = %s AND reservation_id = %s AND state = 'pending'""",
        # Only a pending claim is ever deleted by its reservation: a confirmed one belongs to an
        # account (the relay may confirm it between the sweeper's check and its delete).
        delete=f"DELETE FROM {table} WHERE {kind} = %s AND reservation_id = %s AND state = 'pending'",
        expired=f"""
            SELECT {kind}, user_id, reservation_id FROM {table}
            WHERE state = 'pending' AND expires_at < now()
            ORDER BY expires_at LIMIT %s""",
        account_holds=f"SELECT 1 FROM accounts WHERE user_id = %s AND {kind} = %s",
        release_for_user=f"DELETE FROM {table} WHERE {kind} = %s AND user_id = %s",
        release_all_for_user=f"DELETE FROM {table} WHERE user_id = %s",
    )


SQL: dict[ClaimKind, ClaimSql] = {kind: _sql(kind) for kind in KINDS}


@dataclass(frozen=True, slots=True)
class Claim:
    kind: ClaimKind
    value: str
    user_id: uuid.UUID
    reservation_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ClaimHolder:
    user_id: uuid.UUID
    confirmed: bool


class ClaimStore:
    def __init__(self, shards: ShardTransactions) -> None:
        self.shards = shards

    def shard_of(self, value: str) -> int:
        return self.shards.shard_for(value)

    async def reserve(self, claim: Claim, ttl_s: float = PENDING_TTL_S) -> None:
        """Hold `claim.value` for this registration, or raise Conflict if someone else does."""
        sql = SQL[claim.kind]
        for _ in range(2):
            async with self.shards.transaction_for(claim.value, name="reserve_claim") as conn:
                cursor = await conn.execute(
                    sql.reserve, (claim.value, claim.user_id, claim.reservation_id, ttl_s)
                )
                if await cursor.fetchone() is not None:
                    return
                cursor = await conn.execute(sql.lookup, (claim.value,))
                row = await cursor.fetchone()
            if row is None:
                continue  # released between our two statements: try again
            holder, reservation, state, expired = row
            if reservation == claim.reservation_id:
                return
            if state == "pending" and expired:
                await self.resolve(Claim(claim.kind, claim.value, holder, reservation))
                continue
            break
        raise Conflict(f"{claim.kind} is already taken", details={"field": claim.kind})

    async def confirm(self, claim: Claim) -> None:
        async with self.shards.transaction_for(claim.value, name="confirm_claim") as conn:
            await conn.execute(SQL[claim.kind].confirm, (claim.value, claim.reservation_id))

    async def release(self, claim: Claim) -> None:
        """Give up a pending reservation whose account was certainly not written; someone else's
        claim, and a confirmed one, are untouched."""
        async with self.shards.transaction_for(claim.value, name="release_claim") as conn:
            await conn.execute(SQL[claim.kind].delete, (claim.value, claim.reservation_id))

    async def holder(self, kind: ClaimKind, value: str) -> ClaimHolder | None:
        async with self.shards.transaction_for(value, name="claim_holder") as conn:
            cursor = await conn.execute(SQL[kind].lookup, (value,))
            row = await cursor.fetchone()
        return None if row is None else ClaimHolder(row[0], row[2] == "confirmed")

    async def resolve(self, claim: Claim) -> bool:
        """Settle an abandoned pending claim by the account it was for; True if confirmed."""
        sql = SQL[claim.kind]
        async with self.shards.transaction_for(claim.user_id, name="claim_account_holds") as conn:
            cursor = await conn.execute(sql.account_holds, (claim.user_id, claim.value))
            held = await cursor.fetchone() is not None
        async with self.shards.transaction_for(claim.value, name="resolve_claim") as conn:
            await conn.execute(sql.confirm if held else sql.delete, (claim.value, claim.reservation_id))
        return held

    async def sweep(self, batch: int = 500) -> dict[str, int]:
        """Resolve every expired pending claim on every shard; counts of confirmed/released."""
        counts = {"confirmed": 0, "released": 0}
        for shard in self.shards.shard_indexes:
            for kind in KINDS:
                async with self.shards.transaction(shard, name="expired_claims") as conn:
                    cursor = await conn.execute(SQL[kind].expired, (batch,))
                    rows = await cursor.fetchall()
                for value, user_id, reservation_id in rows:
                    held = await self.resolve(Claim(kind, value, user_id, reservation_id))
                    counts["confirmed" if held else "released"] += 1
        return counts


async def release_for_user(conn: AsyncConnection[Any], kind: ClaimKind, value: str, user_id: uuid.UUID) -> None:
    """Free `value` if `user_id` holds it (relay handlers: rename, user deleted)."""
    await conn.execute(SQL[kind].release_for_user, (value, user_id))
