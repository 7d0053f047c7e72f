"""The inbox: one row per (user, conversation) on the user's shard, written by the relay.

Listing one's conversations is one index range scan on one's own shard. The relay applies
conversation events here (storage/relay/messaging.py); every column it writes either only grows
(`last_message_no`, `read_no`, `activity_at`) or is guarded by the conversation's event number
(`membership_seq`, `preview_seq`), so an event applied twice, or two events applied out of
order, leave the same row: the relay needs no ledger for these effects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection

from messenger.domain.conversations import InboxEntry
from messenger.storage.outbox import append_event, append_events
from messenger.storage.shards.router import ShardRouter

_PREVIEW_COLUMNS = (
    "last_message_id", "last_message_at", "last_sender_id", "last_sender_name", "last_message_preview",
    "preview_seq",
)
_NEWER_PREVIEW = "(EXCLUDED.last_message_no, EXCLUDED.preview_seq) > (i.last_message_no, i.preview_seq)"

# Rows for users that no longer exist are skipped (the join), not failed: their deletion
# removed their inbox, and a late event must not bring it back or fail on the foreign key.
UPSERT_INBOX = f"""
INSERT INTO inbox AS i (user_id, conversation_id, type, title, peer_id, active, membership_seq,
                        last_message_no, read_no, preview_seq, last_message_id, last_message_at,
                        last_sender_id, last_sender_name, last_message_preview, activity_at)
SELECT t.user_id, %(conversation_id)s, %(type)s, %(title)s, t.peer_id, %(active)s, %(membership_seq)s,
       %(last_message_no)s, t.read_no, %(preview_seq)s, %(last_message_id)s, %(last_message_at)s,
       %(last_sender_id)s, %(last_sender_name)s, %(last_message_preview)s, %(activity_at)s
FROM unnest(%(users)s::uuid[], %(peers)s::uuid[], %(read_nos)s::bigint[]) AS t(user_id, peer_id, read_no)
JOIN users u ON u.id = t.user_id
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    active = CASE WHEN EXCLUDED.membership_seq > i.membership_seq THEN EXCLUDED.active ELSE i.active END,
    membership_seq = GREATEST(i.membership_seq, EXCLUDED.membership_seq),
    read_no = GREATEST(i.read_no, EXCLUDED.read_no),
    {", ".join(f"{c} = CASE WHEN {_NEWER_PREVIEW} THEN EXCLUDED.{c} ELSE i.{c} END" for c in _PREVIEW_COLUMNS)},
    last_message_no = GREATEST(i.last_message_no, EXCLUDED.last_message_no),
    activity_at = GREATEST(i.activity_at, EXCLUDED.activity_at)
"""
ADVANCE_READ = """
UPDATE inbox SET read_no = GREATEST(read_no, %s) WHERE user_id = %s AND conversation_id = %s
"""

_ENTRY_COLUMNS = """conversation_id, type, title, peer_id, last_message_id, last_message_at,
       last_sender_id, last_sender_name, last_message_preview,
       GREATEST(last_message_no - read_no, 0), activity_at"""
# Served by inbox_by_activity (user_id, activity_at DESC, conversation_id DESC) WHERE active.
INBOX_FIRST_PAGE = f"""
SELECT {_ENTRY_COLUMNS} FROM inbox
WHERE user_id = %s AND active
ORDER BY activity_at DESC, conversation_id DESC LIMIT %s
"""
INBOX_NEXT_PAGE = f"""
SELECT {_ENTRY_COLUMNS} FROM inbox
WHERE user_id = %s AND active AND (activity_at, conversation_id) < (%s, %s)
ORDER BY activity_at DESC, conversation_id DESC LIMIT %s
"""


@dataclass(frozen=True, slots=True)
class InboxUpdate:
    """What one conversation event changes in its members' inboxes (see UPSERT_INBOX)."""

    conversation_id: uuid.UUID
    type: str
    title: str | None
    users: list[uuid.UUID]
    peers: list[uuid.UUID | None]
    read_nos: list[int]
    active: bool
    membership_seq: int
    last_message_no: int
    preview_seq: int
    last_message_id: uuid.UUID | None
    last_message_at: datetime | None
    last_sender_id: uuid.UUID | None
    last_sender_name: str | None
    last_message_preview: str | None
    activity_at: datetime

    def only(self, users: set[uuid.UUID]) -> InboxUpdate:
        """The same update for the subset of its users that live on one shard."""
        keep = [i for i, u in enumerate(self.users) if u in users]
        return replace(
            self,
            users=[self.users[i] for i in keep],
            peers=[self.peers[i] for i in keep],
            read_nos=[self.read_nos[i] for i in keep],
        )


INBOX_UPDATE = "conversation.inbox"
"""Outbox event: an InboxUpdate for the members' shards."""
READ_MARKER = "conversation.read"
"""Outbox event: a member's read marker moved, so their unread count shrinks."""


def _aggregate(conversation_id: uuid.UUID, shard: int) -> str:
    # One ordering stream per (conversation, target shard): a member shard that is down holds
    # back only its own members' updates, not everyone's.
    return f"conversation:{conversation_id}:to:{shard}"


def inbox_events(update: InboxUpdate, shard_of: Callable[[str], int]) -> list[tuple[str, str, dict[str, Any]]]:
    """The outbox events (aggregate, type, payload) that carry `update`: one per member shard."""
    by_shard: dict[int, set[uuid.UUID]] = {}
    for user_id in update.users:
        by_shard.setdefault(shard_of(str(user_id)), set()).add(user_id)
    return [
        (_aggregate(update.conversation_id, shard), INBOX_UPDATE, msgspec.to_builtins(update.only(users)))
        for shard, users in sorted(by_shard.items())
    ]


async def append_inbox_update(
    conn: AsyncConnection[Any], update: InboxUpdate, shard_of: Callable[[str], int]
) -> None:
    """Queue `update` for the relay, one event per member shard (one statement for all), in
    the caller's transaction on the conversation's shard."""
    await append_events(conn, inbox_events(update, shard_of))


async def append_read(
    conn: AsyncConnection[Any], conversation_id: uuid.UUID, user_id: uuid.UUID, read_no: int, shard: int
) -> None:
    await append_event(conn, _aggregate(conversation_id, shard), READ_MARKER, {
        "conversation_id": str(conversation_id), "user_id": str(user_id), "read_no": read_no,
    })


def decode_update(payload: dict[str, Any]) -> InboxUpdate:
    return msgspec.convert(payload, InboxUpdate)


async def apply_update(conn: AsyncConnection[Any], update: InboxUpdate) -> None:
    params = {f.name: getattr(update, f.name) for f in fields(update)}
    await conn.execute(UPSERT_INBOX, params)


async def advance_read(conn: AsyncConnection[Any], user_id: uuid.UUID, conversation_id: uuid.UUID, read_no: int) -> None:
    await conn.execute(ADVANCE_READ, (read_no, user_id, conversation_id))


def _entry(row: tuple[Any, ...]) -> InboxEntry:
    return InboxEntry(*row)


class InboxStore:
    def __init__(self, router: ShardRouter) -> None:
        self._router = router

    async def page(
        self, user_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[InboxEntry]:
        """Up to `limit` conversations by last activity, newest first, past `after`."""
        if after is None:
            rows = await self._router.read_key(user_id, INBOX_FIRST_PAGE, (user_id, limit), name="inbox_page")
        else:
            rows = await self._router.read_key(
                user_id, INBOX_NEXT_PAGE, (user_id, *after, limit), name="inbox_page"
            )
        return [_entry(r) for r in rows]
