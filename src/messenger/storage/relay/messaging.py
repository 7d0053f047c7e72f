"""Relay handlers of messaging: inbox fan-out, and clean-up steps for user events.

Inbox updates are applied per member shard, one transaction each; the upsert is idempotent and
order-insensitive by construction (storage/inbox.py), so a retry after a shard was down, or a
second relay delivering the same event, changes nothing more.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from messenger.domain.conversations import display_name
from messenger.domain.events import OutboxEvent
from messenger.storage.conversation_log import lock_for_member
from messenger.storage.conversations import MEMBERSHIPS_OF, remove_locked_member
from messenger.storage.inbox import advance_read, apply_update, decode_update
from messenger.storage.shards.transactions import ShardTransactions

USER_NAMES = "SELECT first_name, last_name FROM users WHERE id = %s"
# In batches, each its own transaction: a prolific sender's rename must not hold one huge
# transaction (nor exceed the relay's apply timeout in one statement). Each batch resumes after
# the last key of the one before, one range scan of messages_by_sender (sender_id,
# conversation_id, id), so the whole rename reads each message once: re-selecting "rows still
# stale" from the start re-read every already-renamed row in every batch, O(n^2) per sender.
RENAME_SENDER_BATCH = """
WITH batch AS (
    SELECT conversation_id, id FROM messages
    WHERE sender_id = %(user_id)s AND (conversation_id, id) > (%(after_conversation)s, %(after_id)s)
    ORDER BY sender_id, conversation_id, id
    LIMIT %(batch)s
),
renamed AS (
    UPDATE messages m SET sender_name = %(name)s
    FROM batch WHERE m.conversation_id = batch.conversation_id AND m.id = batch.id
      AND m.sender_name <> %(name)s
    RETURNING m.conversation_id, m.id, m.seq, m.edited_at IS NOT NULL OR m.deleted_at IS NOT NULL AS changed
),
framed AS (
    -- The log serves a message as it is now: its creation frame (by key), and for a message
    -- edited or deleted since, the frames of those changes after it.
    UPDATE conversation_events e
    SET frame = jsonb_set(e.frame::jsonb, '{message,sender_name}', to_jsonb(%(name)s::text))::json
    FROM renamed r
    WHERE e.conversation_id = r.conversation_id
      AND (e.seq = r.seq OR (r.changed AND e.seq > r.seq AND e.type IN ('message.edited', 'message.deleted')))
      AND e.frame->'message'->>'id' = r.id::text
)
SELECT count(*) OVER (), conversation_id, id FROM batch
ORDER BY conversation_id DESC, id DESC LIMIT 1
"""
RENAME_BATCH_SIZE = 500
_NO_KEY = uuid.UUID(int=0)
"""Below every UUIDv7: the first batch starts at the beginning."""


async def apply_inbox_update(event: OutboxEvent, shards: ShardTransactions) -> None:
    """conversation.inbox: upsert each member's inbox row on the member's shard."""
    update = decode_update(event.payload)
    by_shard: dict[int, set[uuid.UUID]] = defaultdict(set)
    for user_id in update.users:
        by_shard[shards.shard_for(user_id)].add(user_id)
    for shard, users in sorted(by_shard.items()):
        async with shards.transaction(shard, name="relay_inbox_update", marks=list(users)) as conn:
            await apply_update(conn, update.only(users))


async def apply_read_marker(event: OutboxEvent, shards: ShardTransactions) -> None:
    """conversation.read: the reader's unread count on their own shard."""
    p = event.payload
    user_id = uuid.UUID(p["user_id"])
    async with shards.transaction_for(user_id, name="relay_read_marker", marks=[user_id]) as conn:
        await advance_read(conn, user_id, uuid.UUID(p["conversation_id"]), int(p["read_no"]))


async def remove_deleted_users_memberships(event: OutboxEvent, shards: ShardTransactions) -> None:
    """user.deleted: leave every conversation they were in, on whatever shard it lives; their
    fellow members see `member.removed` (by: null) in the conversation's history."""
    user_id = uuid.UUID(event.payload["user_id"])
    for shard in shards.shard_indexes:
        async with shards.transaction(shard, name="relay_memberships_of_user") as conn:
            cursor = await conn.execute(MEMBERSHIPS_OF, (user_id,))
            conversation_ids = [row[0] for row in await cursor.fetchall()]
        for conversation_id in conversation_ids:
            # Before the membership goes: a redelivery finds the conversation only while it is there.
            await _scrub_inbox_previews(shards, shard, conversation_id, user_id)
            async with shards.transaction(
                shard, name="relay_remove_deleted_member", marks=[conversation_id]
            ) as conn:
                locked = await lock_for_member(conn, conversation_id, user_id)
                if locked is not None and locked.role is not None:
                    await remove_locked_member(conn, locked, user_id, by=None, shard_of=shards.shard_for)


DELETED_SENDER_NAME = "Deleted user"
"""What a deleted user's kept messages show as their sender (as Discord does): the messages
stay, with `sender_id` intact, so a conversation's history keeps its shape."""

MEMBER_IDS = "SELECT user_id FROM conversation_members WHERE conversation_id = %s"
SCRUB_INBOX_PREVIEWS = """
UPDATE inbox SET last_sender_name = %(name)s
WHERE user_id = ANY(%(members)s) AND conversation_id = %(conversation_id)s
  AND last_sender_id = %(sender)s AND last_sender_name IS DISTINCT FROM %(name)s
"""


async def _scrub_inbox_previews(
    shards: ShardTransactions, shard: int, conversation_id: uuid.UUID, sender: uuid.UUID
) -> None:
    """The members whose inbox shows `sender`'s message as the conversation's last see it from
    a "Deleted user" (each member's row is on the member's shard; by primary key)."""
    async with shards.transaction(shard, name="relay_conversation_member_ids") as conn:
        cursor = await conn.execute(MEMBER_IDS, (conversation_id,))
        members = [row[0] for row in await cursor.fetchall() if row[0] != sender]
    by_shard: dict[int, list[uuid.UUID]] = defaultdict(list)
    for member in members:
        by_shard[shards.shard_for(member)].append(member)
    for member_shard, ids in sorted(by_shard.items()):
        async with shards.transaction(member_shard, name="relay_scrub_inbox_previews", marks=ids) as conn:
            await conn.execute(SCRUB_INBOX_PREVIEWS, {
                "name": DELETED_SENDER_NAME, "members": ids, "conversation_id": conversation_id, "sender": sender,
            })


async def tombstone_deleted_senders(event: OutboxEvent, shards: ShardTransactions) -> None:
    """user.deleted: their messages, on every shard, keep their text and lose their name."""
    user_id = uuid.UUID(event.payload["user_id"])
    for shard in shards.shard_indexes:
        await rename_sender_everywhere_on(shards, shard, user_id, DELETED_SENDER_NAME)


async def rename_sender_everywhere_on(
    shards: ShardTransactions, shard: int, user_id: uuid.UUID, name: str,
    batch: int = RENAME_BATCH_SIZE,
) -> None:
    """Set the sender name of every message of `user_id` on one shard, batch by batch."""
    after = (_NO_KEY, _NO_KEY)
    while True:
        async with shards.transaction(shard, name="relay_rename_sender_batch") as conn:
            cursor = await conn.execute(RENAME_SENDER_BATCH, {
                "name": name, "user_id": user_id, "batch": batch,
                "after_conversation": after[0], "after_id": after[1],
            })
            row = await cursor.fetchone()
        if row is None or row[0] < batch:
            return
        after = (row[1], row[2])


async def rename_sender_in_messages(event: OutboxEvent, shards: ShardTransactions) -> None:
    """user.renamed: the sender name copied into their messages becomes their current name
    (read now from their shard, so events applied late or twice still write the latest)."""
    user_id = uuid.UUID(event.payload["user_id"])
    async with shards.transaction_for(user_id, name="relay_user_names") as conn:
        cursor = await conn.execute(USER_NAMES, (user_id,))
        row = await cursor.fetchone()
    if row is None:
        return  # deleted since: user.deleted takes it from here
    name = display_name(*row)
    for shard in shards.shard_indexes:
        await rename_sender_everywhere_on(shards, shard, user_id, name)
