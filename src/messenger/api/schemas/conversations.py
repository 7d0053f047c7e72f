"""Request and response bodies of conversations, messages and the inbox (msgspec structs).

Responses are encoded straight from the domain's dataclasses; the `...Out` structs here
describe them for the OpenAPI document (a unit test checks that they agree).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from messenger.domain.conversations import (
    BODY_MAX_LENGTH,
    CLIENT_MESSAGE_ID_MAX_LENGTH,
    MEMBER_LIMIT,
    TITLE_MAX_LENGTH,
)

MAX_MEMBERS_PER_REQUEST = 100


class ConversationCreate(msgspec.Struct, forbid_unknown_fields=True):
    """`direct` needs `user_id`; `group` needs `title` (and may list `member_ids`)."""

    type: Literal["direct", "group"]
    user_id: uuid.UUID | msgspec.UnsetType = msgspec.UNSET
    title: Annotated[str, msgspec.Meta(max_length=TITLE_MAX_LENGTH * 2)] | msgspec.UnsetType = msgspec.UNSET
    member_ids: (
        Annotated[list[uuid.UUID], msgspec.Meta(max_length=MEMBER_LIMIT)] | msgspec.UnsetType
    ) = msgspec.UNSET


class MembersAdd(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_MEMBERS_PER_REQUEST)]


class MessageCreate(msgspec.Struct, forbid_unknown_fields=True):
    body: Annotated[str, msgspec.Meta(description=f"1 to {BODY_MAX_LENGTH} characters")]
    client_message_id: Annotated[
        str,
        msgspec.Meta(description=f"The client's id for this send (1 to {CLIENT_MESSAGE_ID_MAX_LENGTH} "
                                 "characters): a retry with the same one returns the stored message"),
    ]


class MessagePatch(msgspec.Struct, forbid_unknown_fields=True):
    body: str


class ReadBody(msgspec.Struct, forbid_unknown_fields=True):
    message_id: uuid.UUID


class MemberOut(msgspec.Struct):
    user_id: uuid.UUID
    role: Literal["admin", "member"]
    joined_at: datetime
    read_message_id: uuid.UUID | None


class ConversationInfo(msgspec.Struct):
    id: uuid.UUID
    type: Literal["direct", "group"]
    title: str | None
    created_by: uuid.UUID
    created_at: datetime
    member_count: int
    last_seq: Annotated[int, msgspec.Meta(description="The seq of its latest event (resume after it)")]
    message_count: int
    last_message_id: uuid.UUID | None
    last_message_at: datetime | None


class ConversationOut(msgspec.Struct):
    conversation: ConversationInfo
    members: list[MemberOut]


class MessageOut(msgspec.Struct):
    id: Annotated[uuid.UUID, msgspec.Meta(description="UUIDv7; grows with every message of the conversation")]
    conversation_id: uuid.UUID
    number: int
    seq: int
    sender_id: uuid.UUID
    sender_name: str
    body: Annotated[str | None, msgspec.Meta(description="null once deleted")]
    client_message_id: str
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None


class MessagePageOut(msgspec.Struct):
    items: Annotated[list[MessageOut], msgspec.Meta(description="Newest first")]
    has_more: Annotated[bool, msgspec.Meta(description="More messages lie beyond the page")]


class ReadOut(msgspec.Struct):
    read_message_id: uuid.UUID | None


class InboxEntryOut(msgspec.Struct):
    conversation_id: uuid.UUID
    type: Literal["direct", "group"]
    title: str | None
    peer_id: Annotated[uuid.UUID | None, msgspec.Meta(description="The other member of a direct conversation")]
    last_message_id: uuid.UUID | None
    last_message_at: datetime | None
    last_sender_id: uuid.UUID | None
    last_sender_name: str | None
    last_message_preview: str | None
    unread_count: int
    activity_at: datetime


class InboxPageOut(msgspec.Struct):
    items: list[InboxEntryOut]
    next_cursor: str | None
