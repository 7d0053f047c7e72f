"""A conversation's event log (`conversation_events`) and the lock that numbers its events.

Every change of a conversation runs in one transaction on its shard that first locks the
conversation row (`lock_for_member`), then takes the next `seq`, writes its rows, appends its
frame here and commits. The row lock makes seqs consecutive and in commit order, so a client
that saw seq n and asks for what follows misses nothing and sees nothing twice.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import msgspec
from psycopg import AsyncConnection

from messenger.domain.conversation_events import Frame
from messenger.domain.conversations import Conversation, LockedConversation, LoggedEvent, Message
from messenger.storage.shards.router import ShardRouter

CONVERSATION_COLUMNS = (
    "c.id, c.type, c.title, c.created_by, c.created_at, c.member_count, c.last_seq, "
    "c.message_count, c.last_message_id, c.last_message_at"
)
# Two statements in one round trip: the lock, then (with a snapshot taken after the lock was
# granted, which one statement could not have: READ COMMITTED snapshots per statement) the
# state that whoever held the lock before may have changed.
LOCK_CONVERSATION = "SELECT 1 FROM conversations WHERE id = %(conversation_id)s FOR UPDATE"
LOCKED_STATE = f"""
SELECT {CONVERSATION_COLUMNS}, me.role,
       ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = c.id) AS members
FROM conversations c
LEFT JOIN conversation_members me ON me.conversation_id = c.id AND me.user_id = %(user_id)s
WHERE c.id = %(conversation_id)s
"""
LOCK_FOR_MEMBER = f"{LOCK_CONVERSATION};\n{LOCKED_STATE}"
APPEND_EVENT = """
WITH bump AS (UPDATE conversations SET last_seq = %(seq)s WHERE id = %(conversation_id)s)
INSERT INTO conversation_events (conversation_id, seq, type, frame)
VALUES (%(conversation_id)s, %(seq)s, %(type)s, %(frame)s)
"""
# The membership check and the range scan in one statement: no row at all means "not a
# member" (or no such conversation), a row of NULLs means "nothing after that seq".
EVENTS_AFTER = """
SELECT e.seq, e.frame::text
FROM conversation_members me
LEFT JOIN LATERAL (
    SELECT seq, frame FROM conversation_events
    WHERE conversation_id = me.conversation_id AND seq > %s
    ORDER BY seq LIMIT %s
) e ON true
WHERE me.conversation_id = %s AND me.user_id = %s
ORDER BY e.seq
"""
# Several conversations of one shard at once (a reconnecting client's resume).
EVENTS_AFTER_MANY = """
SELECT r.conversation_id, e.seq, e.frame::text
FROM unnest(%s::uuid[], %s::bigint[]) AS r(conversation_id, after_seq)
JOIN conversation_members me ON me.conversation_id = r.conversation_id AND me.user_id = %s
LEFT JOIN LATERAL (
    SELECT seq, frame FROM conversation_events
    WHERE conversation_id = r.conversation_id AND seq > r.after_seq
    ORDER BY seq LIMIT %s
) e ON true
ORDER BY r.conversation_id, e.seq
"""

# What came before a live frame's seq: the highest seq the (replica's) log has below it, and
# the events below it logged since a time (a new socket's start), newest page first.
EVENTS_BEFORE = """
SELECT e.seq, e.frame::text, e.created_at >= to_timestamp(%s)
FROM conversation_members me
LEFT JOIN LATERAL (
    SELECT seq, frame, created_at FROM conversation_events
    WHERE conversation_id = me.conversation_id AND seq < %s
    ORDER BY seq DESC LIMIT %s
) e ON true
WHERE me.conversation_id = %s AND me.user_id = %s
"""

# An edit or a deletion rewrites the message in the frames logged before it, so the log never
# serves text the sender edited away or deleted (to anyone: members added later replay the same
# log). The frames stay, with their types and seqs: the history of changes is kept, not the text.
REWRITE_MESSAGE_FRAMES = """
UPDATE conversation_events
SET frame = jsonb_set(frame::jsonb, '{message}', %(message)s::jsonb)::json
WHERE conversation_id = %(conversation_id)s AND seq >= %(created_seq)s
  AND type IN ('message.created', 'message.edited')
  AND frame->'message'->>'id' = %(message_id)s
"""

_encode = msgspec.json.Encoder().encode

async def lock_for_member(
    conn: AsyncConnection[Any], conversation_id: uuid.UUID, user_id: uuid.UUID
) -> LockedConversation | None:
    """Lock the conversation row until the transaction ends; None if there is no such conversation."""
    cursor = await conn.execute(LOCK_FOR_MEMBER, {"conversation_id": conversation_id, "user_id": user_id})
    cursor.nextset()
    row = await cursor.fetchone()
    if row is None:
        return None
    return LockedConversation(Conversation(*row[:10]), row[10], list(row[11]))


async def append_frame(conn: AsyncConnection[Any], frame: Frame) -> bytes:
    """Log `frame` at its seq (the caller holds the conversation's lock); its encoding is returned
    so that the live copy sent after the commit is the same bytes as the replayed one."""
    encoded = _encode(frame)
    await conn.execute(APPEND_EVENT, {
        "conversation_id": frame["conversation_id"], "seq": frame["seq"], "type": frame["type"],
        "frame": encoded.decode(),
    })
    return encoded


async def rewrite_message_frames(conn: AsyncConnection[Any], message: Message) -> None:
    """Make the frames logged for `message` so far show it as it is now (the caller holds the
    conversation's lock; frames from its creation on are scanned, by the log's primary key)."""
    await conn.execute(REWRITE_MESSAGE_FRAMES, {
        "message": _encode(message).decode(), "conversation_id": message.conversation_id,
        "created_seq": message.seq, "message_id": str(message.id),
    })


class ConversationLog:
    """Reads of the log: what a member missed after a seq, from a replica when it has it."""

    def __init__(self, router: ShardRouter, *, page_size: int = 500) -> None:
        self._router = router
        self.page_size = page_size

    async def after(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, after_seq: int, limit: int | None = None
    ) -> list[LoggedEvent] | None:
        """Events after `after_seq` in order (at most `limit`); None if `user_id` is no member."""
        rows = await self._router.read_key(
            conversation_id, EVENTS_AFTER,
            (after_seq, limit or self.page_size, conversation_id, user_id), name="conversation_events_after",
        )
        if not rows:
            return None
        return [(seq, frame.encode()) for seq, frame in rows if seq is not None]

    async def before(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, before_seq: int, since: float
    ) -> tuple[int, list[LoggedEvent]] | None:
        """The highest seq logged below `before_seq` (0 if none) and, in order, the events below
        it logged at or after `since` (epoch seconds; at most a page); None if no member."""
        rows = await self._router.read_key(
            conversation_id, EVENTS_BEFORE,
            (since, before_seq, self.page_size, conversation_id, user_id), name="conversation_events_before",
        )
        if not rows:
            return None
        highest = max((seq for seq, _, _ in rows if seq is not None), default=0)
        recent = sorted((seq, frame.encode()) for seq, frame, new in rows if seq is not None and new)
        return highest, recent

    async def after_many(
        self, user_id: uuid.UUID, positions: Mapping[uuid.UUID, int]
    ) -> dict[uuid.UUID, list[LoggedEvent]]:
        """For each conversation the user is a member of, up to a page of events after its
        position; conversations they are not in are absent from the answer. One query per shard."""
        by_shard: dict[int, list[uuid.UUID]] = defaultdict(list)
        for conversation_id in positions:
            by_shard[self._router.shard_for(conversation_id)].append(conversation_id)
        found: dict[uuid.UUID, list[LoggedEvent]] = {}
        for shard, ids in by_shard.items():
            # From the primary: a replica may not have replayed the latest events yet, and a
            # freshness marker covers one key, not the many of a resume. Resumes are rare.
            async with self._router.transaction(shard, name="conversation_events_after_many") as conn:
                cursor = await conn.execute(
                    EVENTS_AFTER_MANY, (ids, [positions[i] for i in ids], user_id, self.page_size)
                )
                rows = await cursor.fetchall()
            for conversation_id, seq, frame in rows:
                events = found.setdefault(conversation_id, [])
                if seq is not None:
                    events.append((seq, frame.encode()))
        return found
