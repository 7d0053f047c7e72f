"""The events a conversation's members receive live, and replay after a reconnection.

Events that change a conversation (messages created, edited, deleted; members added, removed)
carry `seq`, the conversation's own event number: consecutive, with no holes, in commit order,
so a client that saw seq n asks for everything after n and misses nothing. Read markers and
typing indicators are state and noise, not history: they have no seq and are not replayed.
The builders return plain mappings; whoever sends them encodes them once.
"""

from __future__ import annotations

import uuid
from typing import Any

from messenger.domain.conversations import Conversation, Member, Message

Frame = dict[str, Any]

MESSAGE_CREATED = "message.created"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
CONVERSATION_CREATED = "conversation.created"
MEMBERS_ADDED = "member.added"
MEMBER_REMOVED = "member.removed"
READ = "read"
TYPING = "typing"


def message_frame(kind: str, message: Message, seq: int) -> Frame:
    return {"type": kind, "conversation_id": message.conversation_id, "seq": seq, "message": message}


def conversation_created_frame(conversation: Conversation, members: list[Member]) -> Frame:
    return {
        "type": CONVERSATION_CREATED, "conversation_id": conversation.id, "seq": conversation.last_seq,
        "conversation": conversation, "members": members,
    }


def members_added_frame(conversation_id: uuid.UUID, seq: int, members: list[Member], by: uuid.UUID) -> Frame:
    return {"type": MEMBERS_ADDED, "conversation_id": conversation_id, "seq": seq, "members": members, "by": by}


def member_removed_frame(
    conversation_id: uuid.UUID, seq: int, user_id: uuid.UUID, by: uuid.UUID | None,
    promoted: uuid.UUID | None,
) -> Frame:
    """`by` is None when the member's account was deleted; `promoted`, the member who became
    admin because the last admin left."""
    return {
        "type": MEMBER_REMOVED, "conversation_id": conversation_id, "seq": seq, "user_id": user_id,
        "by": by, "promoted": promoted,
    }


def read_frame(conversation_id: uuid.UUID, user_id: uuid.UUID, message_id: uuid.UUID) -> Frame:
    return {"type": READ, "conversation_id": conversation_id, "user_id": user_id, "message_id": message_id}


def typing_frame(conversation_id: uuid.UUID, user_id: uuid.UUID) -> Frame:
    return {"type": TYPING, "conversation_id": conversation_id, "user_id": user_id}
