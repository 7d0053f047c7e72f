"""Audit checks of messaging's cross-shard references: members and message senders are users
that live on other shards (application-level foreign keys, docs/follows.md)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

from messenger.storage.audit.runner import SCAN_BATCH, Batch, Finding
from messenger.storage.conversation_log import lock_for_member
from messenger.storage.conversations import remove_locked_member
from messenger.storage.relay.messaging import DELETED_SENDER_NAME, rename_sender_everywhere_on
from messenger.storage.shards.transactions import ShardTransactions

SCAN_MEMBERS = """
SELECT conversation_id, user_id FROM conversation_members
WHERE (conversation_id, user_id) > (%(c)s, %(u)s)
ORDER BY conversation_id, user_id LIMIT %(batch)s
"""
SCAN_SENDERS = f"""
SELECT DISTINCT sender_id FROM messages
WHERE sender_id > %(a)s AND sender_name <> '{DELETED_SENDER_NAME}'
ORDER BY sender_id LIMIT %(batch)s
"""
MISSING_USERS = """
SELECT t.id FROM unnest(%(ids)s::uuid[]) AS t(id)
WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = t.id)
"""
ZERO = uuid.UUID(int=0)


async def _missing_users(shards: ShardTransactions, user_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Those of `user_ids` that do not exist, each asked of its own shard (one query per shard)."""
    by_shard: dict[int, list[uuid.UUID]] = defaultdict(list)
    for user_id in user_ids:
        by_shard[shards.shard_for(user_id)].append(user_id)
    missing: set[uuid.UUID] = set()
    for shard, ids in by_shard.items():
        async with shards.transaction(shard, name="audit_missing_users") as conn:
            cursor = await conn.execute(MISSING_USERS, {"ids": ids})
            missing.update(row[0] for row in await cursor.fetchall())
    return missing


class MembershipsCheck:
    """Conversation members (on the conversation's shard) vs the users they name."""

    kind = "memberships"
    description = "conversation members vs the users they name"

    async def scan(self, shards: ShardTransactions, shard: int) -> AsyncIterator[Batch]:
        last = (ZERO, ZERO)
        while True:
            async with shards.transaction(shard, name=f"audit_{self.kind}_scan") as conn:
                cursor = await conn.execute(SCAN_MEMBERS, {"c": last[0], "u": last[1], "batch": SCAN_BATCH})
                rows = await cursor.fetchall()
            if not rows:
                return
            last = rows[-1]
            missing = await _missing_users(shards, {user_id for _, user_id in rows})
            yield Batch(len(rows), [
                Finding("dangling", {"conversation_id": str(c), "user_id": str(u)}, "the member's user is gone")
                for c, u in rows if u in missing
            ])

    async def repair(self, shards: ShardTransactions, shard: int, finding: Finding) -> bool:
        conversation_id = uuid.UUID(finding.ref["conversation_id"])
        user_id = uuid.UUID(finding.ref["user_id"])
        if user_id not in await _missing_users(shards, {user_id}):
            return False  # the user exists after all: nothing dangles
        async with shards.transaction(
            shard, name=f"audit_{self.kind}_repair", marks=[conversation_id]
        ) as conn:
            locked = await lock_for_member(conn, conversation_id, user_id)
            if locked is not None and locked.role is not None:
                await remove_locked_member(conn, locked, user_id, by=None, shard_of=shards.shard_for)
        return True


class MessageSendersCheck:
    """Message senders (on the conversation's shard) vs the users they name: a deleted user's
    messages are kept with the sender shown as "Deleted user"."""

    kind = "message_senders"
    description = "message senders vs the users they name"

    async def scan(self, shards: ShardTransactions, shard: int) -> AsyncIterator[Batch]:
        last = ZERO
        while True:
            async with shards.transaction(shard, name=f"audit_{self.kind}_scan") as conn:
                cursor = await conn.execute(SCAN_SENDERS, {"a": last, "batch": SCAN_BATCH})
                senders = [row[0] for row in await cursor.fetchall()]
            if not senders:
                return
            last = senders[-1]
            missing = await _missing_users(shards, set(senders))
            yield Batch(len(senders), [
                Finding("dangling", {"sender_id": str(s)}, "sender is gone but named on messages")
                for s in senders if s in missing
            ])

    async def repair(self, shards: ShardTransactions, shard: int, finding: Finding) -> bool:
        sender_id = uuid.UUID(finding.ref["sender_id"])
        if sender_id not in await _missing_users(shards, {sender_id}):
            return False
        await rename_sender_everywhere_on(shards, shard, sender_id, DELETED_SENDER_NAME)
        return True
