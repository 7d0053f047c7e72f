"""Relay handlers for account events: settle the uniqueness claims on the values' shards."""

from __future__ import annotations

import uuid

from messenger.domain.events import OutboxEvent
from messenger.storage.claims import KINDS, SQL, Claim, release_for_user
from messenger.storage.shards.transactions import ShardTransactions


async def confirm_registered_claims(event: OutboxEvent, shards: ShardTransactions) -> None:
    """account.registered: confirm the pending claims of the registration (idempotent)."""
    p = event.payload
    for claim in (
        Claim("username", p["username"], uuid.UUID(p["user_id"]), uuid.UUID(p["reservation_id"])),
        Claim("email", p["email"], uuid.UUID(p["user_id"]), uuid.UUID(p["reservation_id"])),
    ):
        async with shards.transaction_for(claim.value, name="relay_confirm_claim") as conn:
            await conn.execute(SQL[claim.kind].confirm, (claim.value, claim.reservation_id))


async def settle_changed_login(event: OutboxEvent, shards: ShardTransactions) -> None:
    """account.login_changed: confirm the new values' claims, free the old values'."""
    p = event.payload
    user_id, reservation = uuid.UUID(p["user_id"]), uuid.UUID(p["reservation_id"])
    for kind in KINDS:
        new, old = p[kind], p[f"old_{kind}"]
        if new == old:
            continue
        async with shards.transaction_for(new, name="relay_confirm_claim") as conn:
            await conn.execute(SQL[kind].confirm, (new, reservation))
        # The account is the truth: a later change may have taken the old value back.
        async with shards.transaction_for(user_id, name="relay_account_holds") as conn:
            cursor = await conn.execute(SQL[kind].account_holds, (user_id, old))
            still_held = await cursor.fetchone() is not None
        if not still_held:
            async with shards.transaction_for(old, name="relay_release_claim") as conn:
                await release_for_user(conn, kind, old, user_id)


async def free_deleted_users_claims(event: OutboxEvent, shards: ShardTransactions) -> None:
    """user.deleted: the username and email become free for others, wherever they live."""
    user_id = uuid.UUID(event.payload["user_id"])
    for shard in shards.shard_indexes:
        async with shards.transaction(shard, name="relay_release_claims_of_user") as conn:
            for kind in KINDS:
                await conn.execute(SQL[kind].release_all_for_user, (user_id,))
