"""The documented response schemas match what the API encodes from the domain's dataclasses."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from messenger.api.schemas.conversations import (
    ConversationInfo,
    InboxEntryOut,
    MemberOut,
    MessageOut,
)
from messenger.domain.conversations import Conversation, InboxEntry, Member, Message
from messenger.domain.ids import new_id

NOW = datetime.now(UTC)


def roundtrip(value: object, schema: type) -> None:
    encoded = msgspec.json.encode(value)
    decoded = msgspec.json.decode(encoded, type=schema)
    assert msgspec.json.encode(decoded) == encoded


def test_message_conversation_member_and_inbox_entry_match_their_schemas() -> None:
    a = new_id()
    roundtrip(Message(new_id(), new_id(), 1, 2, a, "Ada L", "hi", "c1", NOW, None, None), MessageOut)
    roundtrip(Conversation(new_id(), "group", "T", a, NOW, 2, 3, 1, new_id(), NOW), ConversationInfo)
    roundtrip(Member(a, "admin", NOW, None), MemberOut)
    roundtrip(InboxEntry(new_id(), "direct", None, a, None, None, None, None, None, 0, NOW), InboxEntryOut)
