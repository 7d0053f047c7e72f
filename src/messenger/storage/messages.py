"""Messages on their conversation's shard: send, edit, delete, pages, read markers.

A send is one transaction on the conversation's shard, two round trips: with the BEGIN, lock
the conversation (which numbers the message and its event); then, in one text with the COMMIT, write the message, the
conversation's last-message columns, the sender's read marker and the logged event (one
statement) and the inbox events for the relay, one per member shard (one multi-row insert).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection

from messenger.domain.conversation_events import (
    MESSAGE_CREATED,
    MESSAGE_DELETED,
    MESSAGE_EDITED,
    message_frame,
)
from messenger.domain.conversations import (
    Conversation,
    Message,
    MessageChange,
    ReadMarker,
    check_may_delete,
    check_may_edit,
    id_time,
    next_message_id,
    not_found,
    peers,
    preview,
)
from messenger.domain.errors import Conflict, NotFound
from messenger.domain.ids import new_id
from messenger.storage.cache.members import MembershipCache
from messenger.storage.conversation_log import (
    CONVERSATION_COLUMNS,
    LOCK_CONVERSATION,
    append_frame,
    lock_for_member,
    rewrite_message_frames,
)
from messenger.storage.inbox import InboxUpdate, append_inbox_update, append_read, inbox_events
from messenger.storage.outbox import INSERT_EVENTS, events_params
from messenger.storage.shards.fencing import replayed_when_fenced
from messenger.storage.shards.router import ShardRouter
from messenger.storage.shards.transactions import finish_with, opening

MESSAGE_COLUMNS = (
    "id, conversation_id, number, seq, sender_id, sender_name, body, client_message_id, "
    "created_at, edited_at, deleted_at"
)
LOCK_FOR_SEND = f"""{LOCK_CONVERSATION};
SELECT {CONVERSATION_COLUMNS}, me.role,
       ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = c.id) AS members,
       (SELECT m.id FROM messages m
        WHERE m.conversation_id = c.id AND m.sender_id = %(sender)s
          AND m.client_message_id = %(client_message_id)s) AS existing
FROM conversations c
LEFT JOIN conversation_members me ON me.conversation_id = c.id AND me.user_id = %(sender)s
WHERE c.id = %(conversation_id)s
"""
SEND = """
WITH msg AS (
    INSERT INTO messages (id, conversation_id, number, seq, sender_id, sender_name, body,
                          client_message_id, created_at)
    VALUES (%(id)s, %(conversation_id)s, %(number)s, %(seq)s, %(sender)s, %(sender_name)s, %(body)s,
            %(client_message_id)s, %(created_at)s)
), conversation AS (
    UPDATE conversations
    SET last_seq = %(seq)s, message_count = %(number)s, last_message_id = %(id)s,
        last_message_at = %(created_at)s
    WHERE id = %(conversation_id)s
), sender_read AS (
    UPDATE conversation_members SET read_no = %(number)s, read_message_id = %(id)s
    WHERE conversation_id = %(conversation_id)s AND user_id = %(sender)s
)
INSERT INTO conversation_events (conversation_id, seq, type, frame)
VALUES (%(conversation_id)s, %(seq)s, 'message.created', %(frame)s)
"""
SEND_AND_QUEUE = f"{SEND};\n{INSERT_EVENTS}"
SELECT_MESSAGE = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %s AND id = %s"
EDIT_MESSAGE = "UPDATE messages SET body = %s, edited_at = %s WHERE conversation_id = %s AND id = %s"
TOMBSTONE_MESSAGE = "UPDATE messages SET body = NULL, deleted_at = %s WHERE conversation_id = %s AND id = %s"


def _page_sql(bound: str, order: str) -> str:
    # The membership check and one index range scan on (conversation_id, id), in one statement:
    # no row means "not a member", a row of NULLs an empty page.
    return f"""
SELECT m.* FROM conversation_members me
LEFT JOIN LATERAL (
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE conversation_id = me.conversation_id {bound}
    ORDER BY id {order} LIMIT %(limit)s
) m ON true
WHERE me.conversation_id = %(conversation_id)s AND me.user_id = %(user_id)s
ORDER BY m.id {order}
"""


PAGE_NEWEST = _page_sql("", "DESC")
PAGE_BEFORE = _page_sql("AND id < %(before)s", "DESC")
PAGE_AFTER = _page_sql("AND id > %(after)s", "ASC")
PAGE_BETWEEN = _page_sql("AND id > %(after)s AND id < %(before)s", "ASC")

READ_STATE = """
SELECT me.read_no, me.read_message_id, m.number,
       ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = me.conversation_id)
FROM conversation_members me
LEFT JOIN messages m ON m.conversation_id = me.conversation_id AND m.id = %s
WHERE me.conversation_id = %s AND me.user_id = %s
FOR UPDATE OF me
"""
SET_READ = """
UPDATE conversation_members SET read_no = %s, read_message_id = %s
WHERE conversation_id = %s AND user_id = %s
"""

_encode = msgspec.json.Encoder().encode


def _message(row: tuple[Any, ...]) -> Message:
    return Message(*row)


def _preview_update(
    conversation: Conversation, members: list[uuid.UUID], message: Message, seq: int,
    read_nos: list[int] | None = None,
) -> InboxUpdate:
    """What a message event changes in its members' inboxes: the preview when it is the latest
    message (the relay compares numbers and seqs), the sender's own read marker."""
    return InboxUpdate(
        conversation_id=conversation.id, type=conversation.type, title=conversation.title,
        users=members, peers=peers(conversation.type, members),
        read_nos=read_nos or [0] * len(members),
        active=True, membership_seq=0, last_message_no=message.number, preview_seq=seq,
        last_message_id=message.id, last_message_at=message.created_at,
        last_sender_id=message.sender_id, last_sender_name=message.sender_name,
        last_message_preview=preview(message.body), activity_at=message.created_at,
    )


class MessageStore:
    def __init__(self, router: ShardRouter, member_cache: MembershipCache | None = None) -> None:
        self._router = router
        self._members = member_cache
        """Filled by sends: the lock on the primary just proved the sender a member."""

    @replayed_when_fenced
    async def send(
        self, conversation_id: uuid.UUID, sender: uuid.UUID, sender_name: str, body: str,
        client_message_id: str,
    ) -> MessageChange:
        """Store a message; a send with a (sender, client_message_id) already stored returns
        that message instead (the lock makes the check and the insert one step)."""
        membership = (conversation_id, sender)
        seen = self._members.generation(membership) if self._members is not None else None
        lock = (LOCK_FOR_SEND, {
            "sender": sender, "client_message_id": client_message_id, "conversation_id": conversation_id,
        })
        async with self._router.transaction_for(
            conversation_id, name="send_message", marks=[conversation_id], first=lock  # with the BEGIN
        ) as conn:
            cursor = opening(conn)
            cursor.nextset()  # the state after the lock was granted, not before
            row = await cursor.fetchone()
            if row is None or row[10] is None:
                raise not_found(conversation_id)
            conversation, members, existing = Conversation(*row[:10]), list(row[11]), row[12]
            if existing is not None:
                original = await self._get(conn, conversation_id, existing)
                return MessageChange(original, False, members, None)
            message_id = next_message_id(new_id(), conversation.last_message_id)
            seq, number = conversation.last_seq + 1, conversation.message_count + 1
            message = Message(
                message_id, conversation_id, number, seq, sender, sender_name, body, client_message_id,
                id_time(message_id), None, None,
            )
            frame = _encode(message_frame(MESSAGE_CREATED, message, seq))
            read_nos = [number if m == sender else 0 for m in members]
            events = inbox_events(
                _preview_update(conversation, members, message, seq, read_nos), self._router.shard_for
            )
            # The message, its event, the members' inbox events and the COMMIT: one round trip.
            await finish_with(conn, SEND_AND_QUEUE, {
                "id": message_id, "conversation_id": conversation_id, "number": number, "seq": seq,
                "sender": sender, "sender_name": sender_name, "body": body,
                "client_message_id": client_message_id, "created_at": message.created_at,
                "frame": frame.decode(), **events_params(events),
            })
        if self._members is not None and seen is not None:
            self._members.fill(membership, True, seen)
        return MessageChange(message, True, members, frame)

    @replayed_when_fenced
    async def edit(
        self, conversation_id: uuid.UUID, message_id: uuid.UUID, actor: uuid.UUID, body: str
    ) -> MessageChange:
        async with self._router.transaction_for(
            conversation_id, name="edit_message", marks=[conversation_id]
        ) as conn:
            locked = await lock_for_member(conn, conversation_id, actor)
            if locked is None or locked.role is None:
                raise not_found(conversation_id)
            current = await self._get(conn, conversation_id, message_id)
            check_may_edit(actor, current.sender_id)
            if current.deleted_at is not None:
                raise Conflict("a deleted message cannot be edited", details={"id": str(message_id)})
            edited_at = datetime.now(UTC)
            await conn.execute(EDIT_MESSAGE, (body, edited_at, conversation_id, message_id))
            message = replace(current, body=body, edited_at=edited_at)
            await rewrite_message_frames(conn, message)
            frame = await append_frame(conn, message_frame(MESSAGE_EDITED, message, locked.next_seq))
            await append_inbox_update(
                conn, _preview_update(locked.conversation, locked.members, message, locked.next_seq),
                self._router.shard_for,
            )
        return MessageChange(message, True, locked.members, frame)

    @replayed_when_fenced
    async def delete(self, conversation_id: uuid.UUID, message_id: uuid.UUID, actor: uuid.UUID) -> MessageChange:
        """Tombstone a message (its place in the history stays); deleting it again changes nothing."""
        async with self._router.transaction_for(
            conversation_id, name="delete_message", marks=[conversation_id]
        ) as conn:
            locked = await lock_for_member(conn, conversation_id, actor)
            if locked is None or locked.role is None:
                raise not_found(conversation_id)
            current = await self._get(conn, conversation_id, message_id)
            check_may_delete(actor, current.sender_id, locked.role, locked.conversation.type)
            if current.deleted_at is not None:
                return MessageChange(current, False, locked.members, None)
            deleted_at = datetime.now(UTC)
            await conn.execute(TOMBSTONE_MESSAGE, (deleted_at, conversation_id, message_id))
            message = replace(current, body=None, deleted_at=deleted_at)
            await rewrite_message_frames(conn, message)
            frame = await append_frame(conn, message_frame(MESSAGE_DELETED, message, locked.next_seq))
            await append_inbox_update(
                conn, _preview_update(locked.conversation, locked.members, message, locked.next_seq),
                self._router.shard_for,
            )
        return MessageChange(message, True, locked.members, frame)

    async def page(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, *,
        before: uuid.UUID | None, after: uuid.UUID | None, limit: int,
    ) -> list[Message] | None:
        """Up to `limit` messages between the bounds, newest first; None if not a member.

        With `after`, the page is the `limit` messages right after it (so that paging forward
        skips none), still listed newest first.
        """
        params = {"conversation_id": conversation_id, "user_id": user_id, "limit": limit,
                  "before": before, "after": after}
        if after is None:
            sql = PAGE_NEWEST if before is None else PAGE_BEFORE
        else:
            sql = PAGE_AFTER if before is None else PAGE_BETWEEN
        rows = await self._router.read_key(conversation_id, sql, params, name="messages_page")
        if not rows:
            return None
        messages = [_message(r) for r in rows if r[0] is not None]
        if after is not None:
            messages.reverse()
        return messages

    @replayed_when_fenced
    async def mark_read(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, message_id: uuid.UUID
    ) -> ReadMarker:
        """Move the member's read marker forward to `message_id` (never back)."""
        async with self._router.transaction_for(
            conversation_id, name="mark_read", marks=[conversation_id]
        ) as conn:
            cursor = await conn.execute(READ_STATE, (message_id, conversation_id, user_id))
            row = await cursor.fetchone()
            if row is None:
                raise not_found(conversation_id)
            read_no, read_message_id, number, members = row
            if number is None:
                raise NotFound(f"message {message_id} not found", details={"id": str(message_id)})
            if number <= read_no:
                return ReadMarker(read_message_id, list(members), False)
            await conn.execute(SET_READ, (number, message_id, conversation_id, user_id))
            await append_read(conn, conversation_id, user_id, number, self._router.shard_for(user_id))
        return ReadMarker(message_id, list(members), True)

    async def _get(self, conn: AsyncConnection[Any], conversation_id: uuid.UUID, message_id: uuid.UUID) -> Message:
        cursor = await conn.execute(SELECT_MESSAGE, (conversation_id, message_id))
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"message {message_id} not found", details={"id": str(message_id)})
        return _message(row)

