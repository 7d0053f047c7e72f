"""Conversations and their members, on the conversation's shard.

Members may live on any shard; the service checks that they exist before adding them (an
application-level foreign key) and user.deleted removes the memberships of a deleted user.
Every change is one transaction that locks the conversation, logs its event (with the next seq)
and queues the members' inbox update for the relay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from messenger.domain.conversation_events import (
    conversation_created_frame,
    member_removed_frame,
    members_added_frame,
)
from messenger.domain.conversations import (
    Conversation,
    ConversationChange,
    ConversationView,
    LockedConversation,
    Member,
    check_may_remove,
    direct_conversation_id,
    direct_key,
    members_to_add,
    not_found,
    peers,
    preview,
    require_member,
)
from messenger.storage.cache.members import MembershipCache, membership_text
from messenger.storage.conversation_log import (
    CONVERSATION_COLUMNS,
    append_frame,
    lock_for_member,
)
from messenger.storage.inbox import InboxUpdate, append_inbox_update
from messenger.storage.shards.fencing import replayed_when_fenced
from messenger.storage.shards.router import ShardRouter

MEMBER_COLUMNS = "m.user_id, m.role, m.joined_at, m.read_message_id"

INSERT_CONVERSATION = f"""
INSERT INTO conversations AS c (id, type, title, created_by, direct_key, member_count, last_seq)
VALUES (%s, %s, %s, %s, %s, %s, 1)
ON CONFLICT DO NOTHING
RETURNING {CONVERSATION_COLUMNS}
"""
INSERT_MEMBERS = f"""
INSERT INTO conversation_members AS m (conversation_id, user_id, role, read_no)
SELECT %s, t.user_id, t.role, %s FROM unnest(%s::uuid[], %s::text[]) AS t(user_id, role)
ON CONFLICT DO NOTHING
RETURNING {MEMBER_COLUMNS}
"""
ADD_TO_MEMBER_COUNT = "UPDATE conversations SET member_count = member_count + %s WHERE id = %s"
# The conversation with every member, if `user_id` is one of them.
SELECT_VIEW = f"""
SELECT {CONVERSATION_COLUMNS}, {MEMBER_COLUMNS}
FROM conversations c JOIN conversation_members m ON m.conversation_id = c.id
WHERE c.id = %s
  AND EXISTS (SELECT 1 FROM conversation_members WHERE conversation_id = c.id AND user_id = %s)
ORDER BY m.joined_at, m.user_id
"""
SELECT_MEMBER_IDS = """
SELECT ARRAY(SELECT user_id FROM conversation_members WHERE conversation_id = me.conversation_id)
FROM conversation_members me WHERE me.conversation_id = %s AND me.user_id = %s
"""
DELETE_MEMBER = """
DELETE FROM conversation_members WHERE conversation_id = %s AND user_id = %s RETURNING role
"""
# When the last admin leaves, the longest-standing member takes over.
PROMOTE_IF_NO_ADMIN = """
UPDATE conversation_members SET role = 'admin'
WHERE conversation_id = %(id)s
  AND user_id = (SELECT user_id FROM conversation_members WHERE conversation_id = %(id)s
                 ORDER BY joined_at, user_id LIMIT 1)
  AND NOT EXISTS (SELECT 1 FROM conversation_members WHERE conversation_id = %(id)s AND role = 'admin')
RETURNING user_id
"""
LAST_MESSAGE = """
SELECT id, created_at, sender_id, sender_name, body FROM messages WHERE conversation_id = %s AND id = %s
"""
IS_MEMBER = "SELECT 1 FROM conversation_members WHERE conversation_id = %s AND user_id = %s"
MEMBERSHIPS_OF = "SELECT conversation_id FROM conversation_members WHERE user_id = %s"


def _member(row: tuple[Any, ...]) -> Member:
    return Member(*row)


class ConversationStore:
    def __init__(self, router: ShardRouter, member_cache: MembershipCache | None = None) -> None:
        self._router = router
        self._members = member_cache

    @replayed_when_fenced
    async def open_direct(self, creator: uuid.UUID, other: uuid.UUID) -> ConversationChange:
        """The direct conversation of the pair: created now (created=True) or found."""
        conversation_id = direct_conversation_id(creator, other)
        async with self._router.transaction_for(
            conversation_id, name="open_direct_conversation", marks=[conversation_id]
        ) as conn:
            cursor = await conn.execute(
                INSERT_CONVERSATION,
                (conversation_id, "direct", None, creator, direct_key(creator, other), 2),
            )
            row = await cursor.fetchone()
            if row is None:  # it exists (or the other request of a race committed it first)
                view = await _view(conn, conversation_id, creator)
                if view is None:
                    raise not_found(conversation_id)
                return ConversationChange(view, [], None, created=False)
            return await _created(
                conn, Conversation(*row), [(creator, "member"), (other, "member")], self._router.shard_for
            )

    @replayed_when_fenced
    async def create_group(
        self, conversation_id: uuid.UUID, creator: uuid.UUID, title: str, member_ids: list[uuid.UUID]
    ) -> ConversationChange:
        """A group whose creator is its admin; `member_ids` are the others (deduplicated)."""
        async with self._router.transaction_for(
            conversation_id, name="create_group", marks=[conversation_id]
        ) as conn:
            cursor = await conn.execute(
                INSERT_CONVERSATION, (conversation_id, "group", title, creator, None, 1 + len(member_ids))
            )
            row = await cursor.fetchone()
            assert row is not None, "a fresh UUIDv7 collided"
            roles = [(creator, "admin"), *((m, "member") for m in member_ids)]
            return await _created(conn, Conversation(*row), roles, self._router.shard_for)

    async def get(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> ConversationView | None:
        """The conversation if `user_id` is a member of it, else None."""
        rows = await self._router.read_key(
            conversation_id, SELECT_VIEW, (conversation_id, user_id), name="get_conversation"
        )
        return _view_from_rows(rows)

    async def is_member(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Whether `user_id` is a member, from this worker's memberships cache when it holds
        them and no removal of this membership is recent (its freshness marker: set at the
        removal's commit, before the invalidation reaches the other workers)."""
        cache, key = self._members, (conversation_id, user_id)
        if cache is None or not cache.usable:
            return await self._read_member(conversation_id, user_id)
        hit, _ = cache.get(key)
        removed_lately = await self._router.recently_written(membership_text(key))
        if hit and not removed_lately:
            return True
        seen = cache.generation(key)  # before the read: a removal meanwhile voids the fill
        member = await self._read_member(conversation_id, user_id)
        if member and not removed_lately:
            cache.fill(key, True, seen)
        return member

    async def _read_member(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        rows = await self._router.read_key(
            conversation_id, IS_MEMBER, (conversation_id, user_id), name="is_conversation_member"
        )
        return bool(rows)

    async def member_ids(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> list[uuid.UUID] | None:
        """Every member's id if `user_id` is a member, else None."""
        rows = await self._router.read_key(
            conversation_id, SELECT_MEMBER_IDS, (conversation_id, user_id), name="conversation_member_ids"
        )
        return list(rows[0][0]) if rows else None

    @replayed_when_fenced
    async def add_members(
        self, conversation_id: uuid.UUID, actor: uuid.UUID, user_ids: list[uuid.UUID], limit: int
    ) -> ConversationChange:
        """Add members (an admin's act); those already in are left as they are."""
        async with self._router.transaction_for(
            conversation_id, name="add_members", marks=[conversation_id]
        ) as conn:
            locked = require_member(await lock_for_member(conn, conversation_id, actor), conversation_id)
            new = members_to_add(locked, user_ids, limit)
            if not new:
                return ConversationChange(await _view(conn, conversation_id, actor), [], None)
            conversation = locked.conversation
            seq = locked.next_seq
            cursor = await conn.execute(
                INSERT_MEMBERS,
                (conversation_id, conversation.message_count, new, ["member"] * len(new)),
            )
            added = [_member(r) for r in await cursor.fetchall()]
            await conn.execute(ADD_TO_MEMBER_COUNT, (len(added), conversation_id))
            frame = await append_frame(conn, members_added_frame(conversation_id, seq, added, actor))
            await append_inbox_update(
                conn, await _joined(conn, locked, [m.user_id for m in added], seq), self._router.shard_for
            )
            view = await _view(conn, conversation_id, actor)
        return ConversationChange(view, [*locked.members, *new], frame)

    @replayed_when_fenced
    async def remove_member(
        self, conversation_id: uuid.UUID, actor: uuid.UUID, user_id: uuid.UUID
    ) -> ConversationChange:
        """A member leaves (actor == user_id) or a group admin removes them. The memberships
        cache drops the key here and on every worker before this returns (also when the
        outcome is unknown)."""
        key = (conversation_id, user_id)
        try:
            async with self._router.transaction_for(
                conversation_id, name="remove_member", marks=[conversation_id, membership_text(key)]
            ) as conn:
                locked = require_member(await lock_for_member(conn, conversation_id, actor), conversation_id)
                check_may_remove(locked, actor, user_id)
                return await remove_locked_member(
                    conn, locked, user_id, by=actor, shard_of=self._router.shard_for
                )
        finally:
            if self._members is not None:
                await self._members.written(key)


async def remove_locked_member(
    conn: AsyncConnection[Any], locked: LockedConversation, user_id: uuid.UUID, *, by: uuid.UUID | None,
    shard_of: Callable[[str], int],
) -> ConversationChange:
    """Remove a member of a locked conversation: log it, promote an admin if the last one left,
    and deactivate the member's inbox row. `by` None: their account was deleted."""
    conversation_id = locked.conversation.id
    cursor = await conn.execute(DELETE_MEMBER, (conversation_id, user_id))
    if await cursor.fetchone() is None:
        return ConversationChange(None, [], None)
    await conn.execute(ADD_TO_MEMBER_COUNT, (-1, conversation_id))
    cursor = await conn.execute(PROMOTE_IF_NO_ADMIN, {"id": conversation_id})
    promoted = await cursor.fetchone()
    seq = locked.next_seq
    frame = await append_frame(conn, member_removed_frame(
        conversation_id, seq, user_id, by, promoted[0] if promoted else None
    ))
    conversation = locked.conversation
    await append_inbox_update(conn, InboxUpdate(
        conversation_id=conversation_id, type=conversation.type, title=conversation.title,
        users=[user_id], peers=[None], read_nos=[0], active=False, membership_seq=seq,
        last_message_no=0, preview_seq=0, last_message_id=None, last_message_at=None,
        last_sender_id=None, last_sender_name=None, last_message_preview=None,
        activity_at=conversation.created_at,
    ), shard_of)
    return ConversationChange(None, locked.members, frame)


async def _created(
    conn: AsyncConnection[Any], conversation: Conversation, roles: list[tuple[uuid.UUID, str]],
    shard_of: Callable[[str], int],
) -> ConversationChange:
    cursor = await conn.execute(
        INSERT_MEMBERS, (conversation.id, 0, [u for u, _ in roles], [r for _, r in roles])
    )
    members = [_member(r) for r in await cursor.fetchall()]
    frame = await append_frame(conn, conversation_created_frame(conversation, members))
    locked = LockedConversation(conversation, "admin", [m.user_id for m in members])
    await append_inbox_update(conn, await _joined(conn, locked, locked.members, conversation.last_seq), shard_of)
    return ConversationChange(ConversationView(conversation, members), locked.members, frame)


async def _joined(
    conn: AsyncConnection[Any], locked: LockedConversation, users: list[uuid.UUID], seq: int
) -> InboxUpdate:
    """The inbox rows of members who just joined: the conversation as it is now (its last
    message as preview), nothing unread."""
    conversation = locked.conversation
    last: tuple[Any, ...] = (None, None, None, None, None)
    if conversation.last_message_id is not None:
        cursor = await conn.execute(LAST_MESSAGE, (conversation.id, conversation.last_message_id))
        last = await cursor.fetchone() or last
    everyone = locked.members if conversation.type == "direct" else users
    peer_of = dict(zip(everyone, peers(conversation.type, everyone), strict=True))
    return InboxUpdate(
        conversation_id=conversation.id, type=conversation.type, title=conversation.title,
        users=users, peers=[peer_of.get(u) for u in users],
        read_nos=[conversation.message_count] * len(users), active=True, membership_seq=seq,
        last_message_no=conversation.message_count, preview_seq=seq,
        last_message_id=last[0], last_message_at=last[1], last_sender_id=last[2],
        last_sender_name=last[3], last_message_preview=preview(last[4]),
        activity_at=datetime.now(UTC),
    )


async def _view(conn: AsyncConnection[Any], conversation_id: uuid.UUID, user_id: uuid.UUID) -> ConversationView | None:
    cursor = await conn.execute(SELECT_VIEW, (conversation_id, user_id))
    return _view_from_rows(await cursor.fetchall())


def _view_from_rows(rows: list[tuple[Any, ...]]) -> ConversationView | None:
    if not rows:
        return None
    return ConversationView(Conversation(*rows[0][:10]), [_member(r[10:]) for r in rows])
