"""Conversations, members and messages: the entities and the rules their fields obey (no I/O)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from messenger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound

ConversationType = Literal["direct", "group"]
Role = Literal["admin", "member"]

MEMBER_LIMIT = 1000
"""Members of one group at most: every message fans out to each member's inbox and socket."""
TITLE_MAX_LENGTH = 200
BODY_MAX_LENGTH = 4000
"""Characters (code points) of a message body."""
CLIENT_MESSAGE_ID_MAX_LENGTH = 100
PREVIEW_LENGTH = 120
"""Characters of a message shown in inboxes."""

_DIRECT_NAMESPACE = b"messenger:direct:"
_ALLOWED_CONTROLS = frozenset("\t\n\r")


@dataclass(frozen=True, slots=True)
class Conversation:
    id: uuid.UUID
    type: ConversationType
    title: str | None
    created_by: uuid.UUID
    created_at: datetime
    member_count: int
    last_seq: int
    message_count: int
    last_message_id: uuid.UUID | None
    last_message_at: datetime | None


@dataclass(frozen=True, slots=True)
class Member:
    user_id: uuid.UUID
    role: Role
    joined_at: datetime
    read_message_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Message:
    id: uuid.UUID
    conversation_id: uuid.UUID
    number: int
    """The message's position among the conversation's messages (1, 2, …): read markers."""
    seq: int
    """The conversation event that created it: a client resumes after its last seq."""
    sender_id: uuid.UUID
    sender_name: str
    body: str | None
    """None once the message is deleted (a tombstone keeps its place in the history)."""
    client_message_id: str
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class InboxEntry:
    conversation_id: uuid.UUID
    type: ConversationType
    title: str | None
    peer_id: uuid.UUID | None
    """The other member of a direct conversation."""
    last_message_id: uuid.UUID | None
    last_message_at: datetime | None
    last_sender_id: uuid.UUID | None
    last_sender_name: str | None
    last_message_preview: str | None
    unread_count: int
    activity_at: datetime


# -- what the stores answer (the services and the API consume these) -------------------------


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation as a member sees it: with every member and their read markers."""

    conversation: Conversation
    members: list[Member]


@dataclass(frozen=True, slots=True)
class ConversationChange:
    """The outcome of a change of a conversation or its members: whom to tell live, and what
    (frame None: nothing changed)."""

    view: ConversationView | None
    notify: list[uuid.UUID]
    frame: bytes | None
    created: bool = True


@dataclass(frozen=True, slots=True)
class MessageChange:
    """The outcome of a send, edit or delete of a message."""

    message: Message
    created: bool
    """False when nothing was written: a retry of a send that had already succeeded, or a
    delete of a message already deleted."""
    members: list[uuid.UUID]
    frame: bytes | None
    """The live event to publish; None when nothing changed."""


@dataclass(frozen=True, slots=True)
class ReadMarker:
    """A member's read marker after marking a message read."""

    message_id: uuid.UUID | None
    members: list[uuid.UUID]
    changed: bool


@dataclass(frozen=True, slots=True)
class LockedConversation:
    """A conversation locked for a change, as its member `role` sees it (None: not a member).

    The member rules below are checked on it, under the lock, so that no concurrent change
    can invalidate them before the transaction commits."""

    conversation: Conversation
    role: str | None
    members: list[uuid.UUID]

    @property
    def next_seq(self) -> int:
        return self.conversation.last_seq + 1


LoggedEvent = tuple[int, bytes]
"""An entry of a conversation's event log: (seq, the frame as sent to clients)."""


def direct_key(a: uuid.UUID, b: uuid.UUID) -> str:
    """The pair's key, the same whichever of the two asks: the ids sorted, joined."""
    low, high = sorted((str(a), str(b)))
    return f"{low}:{high}"


def direct_conversation_id(a: uuid.UUID, b: uuid.UUID) -> uuid.UUID:
    """The id of the direct conversation between two users, derived from the pair.

    Both users asking at the same moment compute the same id, so both requests route to the
    same shard and meet on its primary key: the conversation is created once without any
    cross-shard coordination. It is a UUIDv8 (RFC 9562, custom) made from SHA-256 of the pair
    key: a direct conversation has no creation order to encode, only an identity.
    """
    digest = bytearray(hashlib.sha256(_DIRECT_NAMESPACE + direct_key(a, b).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return uuid.UUID(bytes=bytes(digest))


def id_time(message_id: uuid.UUID) -> datetime:
    """When a UUIDv7 was made: a message's creation time is its id's."""
    return datetime.fromtimestamp((message_id.int >> 80) / 1000, tz=UTC)


def clean_title(title: str) -> str:
    cleaned = title.strip()
    if not 1 <= len(cleaned) <= TITLE_MAX_LENGTH:
        raise InvalidInput(
            f"title must be 1 to {TITLE_MAX_LENGTH} characters after trimming", details={"field": "title"}
        )
    _check_text("title", cleaned)
    return cleaned


def clean_body(body: str) -> str:
    """A message body: 1 to 4,000 characters, not only whitespace, valid text (no NUL or other
    control characters than tab and newlines, no lone surrogates). Kept as written otherwise."""
    if not 1 <= len(body) <= BODY_MAX_LENGTH:
        raise InvalidInput(
            f"body must be 1 to {BODY_MAX_LENGTH} characters (got {len(body)})", details={"field": "body"}
        )
    if not body.strip():
        raise InvalidInput("body must not be only whitespace", details={"field": "body"})
    _check_text("body", body)
    return body


def clean_client_message_id(value: str) -> str:
    if not 1 <= len(value) <= CLIENT_MESSAGE_ID_MAX_LENGTH:
        raise InvalidInput(
            f"client_message_id must be 1 to {CLIENT_MESSAGE_ID_MAX_LENGTH} characters",
            details={"field": "client_message_id"},
        )
    _check_text("client_message_id", value)
    return value


def preview(body: str | None) -> str | None:
    """What an inbox shows of a message: its start, on one line."""
    if body is None:
        return None
    line = " ".join(body.split())
    return line if len(line) <= PREVIEW_LENGTH else line[: PREVIEW_LENGTH - 1] + "…"


def display_name(first_name: str, last_name: str) -> str:
    return f"{first_name} {last_name}".strip()


def _check_text(field: str, value: str) -> None:
    for ch in value:
        if (ch < " " and ch not in _ALLOWED_CONTROLS) or ch == "\x7f":
            raise InvalidInput(f"{field} must not contain control characters", details={"field": field})
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid text (lone surrogate)", details={"field": field}) from None


def next_message_id(candidate: uuid.UUID, last: uuid.UUID | None) -> uuid.UUID:
    """`candidate` (a fresh UUIDv7), or just after `last` when another process's clock was
    ahead: a conversation's message ids grow in commit order, so a reader paging forward by id
    while messages arrive never skips one."""
    if last is not None and candidate.int <= last.int:
        return uuid.UUID(int=last.int + 1)
    return candidate


def peers(conversation_type: str, members: list[uuid.UUID]) -> list[uuid.UUID | None]:
    """Each member's peer in a direct conversation (the other member); None in groups."""
    if conversation_type == "direct" and len(members) == 2:
        return [members[1], members[0]]
    return [None] * len(members)


def not_found(conversation_id: uuid.UUID) -> NotFound:
    """The one answer for "no such conversation" and "you are not a member of it": a conversation's
    existence is not revealed to outsiders."""
    return NotFound(f"conversation {conversation_id} not found", details={"id": str(conversation_id)})


def check_may_delete(actor: uuid.UUID, sender: uuid.UUID, role: str | None, conversation_type: str) -> None:
    if actor != sender and not (conversation_type == "group" and role == "admin"):
        raise Forbidden("only the sender or a group admin may delete a message")


def check_may_edit(actor: uuid.UUID, sender: uuid.UUID) -> None:
    if actor != sender:
        raise Forbidden("only the sender may edit a message")


# -- member rules (checked on the locked conversation) -------------------------------------


def require_member(locked: LockedConversation | None, conversation_id: uuid.UUID) -> LockedConversation:
    """The locked conversation if the actor is one of its members; the outsiders' 404 otherwise
    (also when there is no such conversation)."""
    if locked is None or locked.role is None:
        raise not_found(conversation_id)
    return locked


def members_to_add(locked: LockedConversation, user_ids: list[uuid.UUID], limit: int) -> list[uuid.UUID]:
    """The users an add by `locked`'s member brings in, in the order given, without repeats and
    without those already in (an empty list: nothing to do). Only a group's admins add members,
    and a group has at most `limit` of them."""
    conversation = locked.conversation
    if conversation.type == "direct":
        raise Conflict("a direct conversation's members cannot change")
    if locked.role != "admin":
        raise Forbidden("only a group's admins may add members")
    present = set(locked.members)
    new = [u for u in dict.fromkeys(user_ids) if u not in present]
    if new and conversation.member_count + len(new) > limit:
        raise Conflict(
            f"a group has at most {limit} members",
            details={"limit": limit, "members": conversation.member_count},
        )
    return new


def check_may_remove(locked: LockedConversation, actor: uuid.UUID, user_id: uuid.UUID) -> None:
    """A member may leave a group (actor == user_id); only its admins remove others."""
    if locked.conversation.type == "direct":
        raise Conflict("a direct conversation's members cannot change")
    if actor != user_id and locked.role != "admin":
        raise Forbidden("only a group's admins may remove other members")
    if user_id not in locked.members:
        raise NotFound(f"user {user_id} is not a member", details={"user_id": str(user_id)})
