"""Use cases of messaging: conversations, members, messages, read markers, the inbox, typing.

Each checks its inputs with the domain's rules, calls the stores (one transaction on the
conversation's shard for a change) and, once that committed, publishes the live event to the
members' sockets. Publishing after the commit is the fast path, not the guarantee: the event is
in the conversation's log, so a socket that misses it (a Redis hiccup, a worker restart) gets
it from the log on the next event or on its resume. Inboxes are the relay's job.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from messenger.domain.conversation_events import read_frame, typing_frame
from messenger.domain.conversations import (
    MEMBER_LIMIT,
    ConversationChange,
    ConversationView,
    InboxEntry,
    Message,
    MessageChange,
    ReadMarker,
    clean_body,
    clean_client_message_id,
    clean_title,
    display_name,
    not_found,
)
from messenger.domain.errors import InvalidInput, NotFound, Unauthenticated
from messenger.domain.ids import new_id, parse_id
from messenger.domain.pages import check_page_limit
from messenger.services.cursor import CursorCodec
from messenger.storage.conversation_log import ConversationLog
from messenger.storage.conversations import ConversationStore
from messenger.storage.inbox import InboxStore
from messenger.storage.messages import MessageStore
from messenger.storage.redis.rate_limits import FixedWindow, TokenBucket
from messenger.storage.users import UserStore

DEFAULT_PAGE_SIZE = 50
MEMBERS_CACHE_S = 5.0
"""How long a worker trusts its copy of a conversation's member list (typing indicators only)."""

_encode = msgspec.json.Encoder().encode


class Publisher(Protocol):
    async def publish(self, user_ids: list[uuid.UUID], frame: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class MessagingLimits:
    """Per-user limits on what fans out (README, "Security settings for production"); each
    fails open when Redis is down (logged)."""

    conversations: TokenBucket | None = None
    """Groups and direct conversations opened: each writes rows and inbox events per member."""
    member_adds: FixedWindow | None = None
    """Members added (by group creation or adds) per window, counted per member."""
    members_per_request: int = 100
    edits: TokenBucket | None = None
    """Edits and deletions: each is an event to every member's sockets and inbox."""
    resumes: TokenBucket | None = None
    """WebSocket resumes: each reads up to a thousand conversations' logs."""


@dataclass(frozen=True, slots=True)
class MessagePage:
    items: list[Message]
    has_more: bool


@dataclass(frozen=True, slots=True)
class InboxPage:
    items: list[InboxEntry]
    next_cursor: str | None


class MessagingService:
    def __init__(
        self,
        conversations: ConversationStore,
        messages: MessageStore,
        inbox: InboxStore,
        log: ConversationLog,
        users: UserStore,
        publisher: Publisher,
        send_limit: TokenBucket | None,
        cursors: CursorCodec,
        *,
        member_limit: int = MEMBER_LIMIT,
        limits: MessagingLimits | None = None,
    ) -> None:
        self._limits = limits or MessagingLimits()
        self._conversations = conversations
        self._messages = messages
        self._inbox = inbox
        self._log = log
        self._users = users
        self._publisher = publisher
        self._send_limit = send_limit
        self._cursors = cursors
        self.member_limit = member_limit
        self._members: dict[uuid.UUID, tuple[float, frozenset[uuid.UUID]]] = {}

    # -- conversations ----------------------------------------------------------------------

    async def open_direct(self, caller: uuid.UUID, other: uuid.UUID) -> tuple[ConversationView, bool]:
        """The caller's direct conversation with `other`, and whether it was created now."""
        if other == caller:
            raise InvalidInput("a direct conversation needs another user", details={"field": "user_id"})
        await self._take(self._limits.conversations, caller, "opening conversations too fast, slow down")
        await self._require_users([other], field="user_id", caller=caller)
        change = await self._conversations.open_direct(caller, other)
        await self._announce(change)
        assert change.view is not None
        return change.view, change.created

    async def create_group(
        self, caller: uuid.UUID, title: str, member_ids: list[uuid.UUID]
    ) -> ConversationView:
        title = clean_title(title)
        others = [m for m in dict.fromkeys(member_ids) if m != caller]
        if 1 + len(others) > self.member_limit:
            raise InvalidInput(
                f"a group has at most {self.member_limit} members", details={"field": "member_ids"}
            )
        self._check_members_per_request(others, "member_ids")
        await self._take(self._limits.conversations, caller, "creating groups too fast, slow down")
        await self._take(self._limits.member_adds, caller, "adding too many members, try again later", len(others))
        await self._require_users(others, field="member_ids", caller=caller)
        change = await self._conversations.create_group(new_id(), caller, title, others)
        await self._announce(change)
        assert change.view is not None
        return change.view

    async def get(self, caller: uuid.UUID, conversation_id: uuid.UUID) -> ConversationView:
        view = await self._conversations.get(conversation_id, caller)
        if view is None:
            raise not_found(conversation_id)
        return view

    async def add_members(
        self, caller: uuid.UUID, conversation_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> ConversationView:
        user_ids = list(dict.fromkeys(user_ids))
        self._check_members_per_request(user_ids, "user_ids")
        await self._take(self._limits.member_adds, caller, "adding too many members, try again later", len(user_ids))
        await self._require_users(user_ids, field="user_ids", caller=caller)
        change = await self._conversations.add_members(conversation_id, caller, user_ids, self.member_limit)
        self._members.pop(conversation_id, None)
        await self._announce(change)
        assert change.view is not None
        return change.view

    async def remove_member(self, caller: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        change = await self._conversations.remove_member(conversation_id, caller, user_id)
        self._members.pop(conversation_id, None)
        await self._announce(change)

    # -- messages ---------------------------------------------------------------------------

    async def send(
        self, caller: uuid.UUID, conversation_id: uuid.UUID, body: str, client_message_id: str
    ) -> tuple[Message, bool]:
        """Store and deliver a message; (message, created). A retry with the same
        client_message_id returns the stored message (created False) and sends nothing."""
        body = clean_body(body)
        client_message_id = clean_client_message_id(client_message_id)
        # The limit and the sender's name at once (two Redis round trips, or a Redis and a
        # database one, overlap); a send over the limit is refused as before, name or not.
        taking = None
        if self._send_limit is not None:
            taking = asyncio.ensure_future(self._send_limit.take(str(caller), message="sending too fast, slow down"))
        try:
            sender = await self._users.get(caller)
        finally:
            if taking is not None:
                await taking
        if sender is None:
            raise NotFound("your user no longer exists")
        sent = await self._messages.send(
            conversation_id, caller, display_name(sender.first_name, sender.last_name), body,
            client_message_id,
        )
        await self._announce_message(sent)
        return sent.message, sent.created

    async def edit(
        self, caller: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID, body: str
    ) -> Message:
        body = clean_body(body)
        await self._take(self._limits.edits, caller, "editing too fast, slow down")
        sent = await self._messages.edit(conversation_id, message_id, caller, body)
        await self._announce_message(sent)
        return sent.message

    async def delete(self, caller: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        await self._take(self._limits.edits, caller, "deleting too fast, slow down")
        sent = await self._messages.delete(conversation_id, message_id, caller)
        await self._announce_message(sent)

    async def page(
        self, caller: uuid.UUID, conversation_id: uuid.UUID, *,
        before: uuid.UUID | None, after: uuid.UUID | None, limit: int,
    ) -> MessagePage:
        check_page_limit(limit)
        if before is not None and after is not None and after >= before:
            raise InvalidInput("after must be older than before", details={"field": "after"})
        items = await self._messages.page(
            conversation_id, caller, before=before, after=after, limit=limit + 1
        )
        if items is None:
            raise not_found(conversation_id)
        has_more = len(items) > limit
        if has_more:  # drop the one past the page: the oldest, or with `after` the newest
            items = items[1:] if after is not None else items[:-1]
        return MessagePage(items, has_more)

    async def mark_read(
        self, caller: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> ReadMarker:
        marker = await self._messages.mark_read(conversation_id, caller, message_id)
        if marker.changed and marker.message_id is not None:
            frame = _encode(read_frame(conversation_id, caller, marker.message_id))
            await self._publisher.publish(marker.members, frame)
        return marker

    async def events(
        self, caller: uuid.UUID, conversation_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[bytes]:
        """The conversation's events after `after_seq`, as the socket would have sent them."""
        if after_seq < 0:
            raise InvalidInput("after must be a seq (0 or more)", details={"field": "after"})
        check_page_limit(limit, self._log.page_size)
        events = await self._log.after(conversation_id, caller, after_seq, limit)
        if events is None:
            raise not_found(conversation_id)
        return [frame for _, frame in events]

    # -- inbox, typing ----------------------------------------------------------------------

    async def inbox(self, caller: uuid.UUID, *, cursor: str | None, limit: int) -> InboxPage:
        """The caller's conversations by last activity, from their own shard."""
        check_page_limit(limit)
        after = None
        if cursor is not None:
            state = self._cursors.decode(cursor)
            try:
                after = (
                    datetime.fromtimestamp(int(state["t"]) / 1_000_000, tz=UTC),
                    parse_id(str(state["c"]), field="cursor"),
                )
            except (KeyError, ValueError, TypeError):
                raise InvalidInput("invalid cursor", details={"field": "cursor"}) from None
        items = await self._inbox.page(caller, after, limit)
        next_cursor = None
        if len(items) == limit:
            last = items[-1]
            micros = int(last.activity_at.timestamp() * 1_000_000)
            next_cursor = self._cursors.encode({"t": micros, "c": str(last.conversation_id)})
        return InboxPage(items, next_cursor)

    async def typing(self, caller: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """Tell the other members that the caller is typing (not stored). Whether the caller
        is a member comes from the memberships cache (a removal reaches it before its response);
        the list of whom to tell may be a few seconds old."""
        if not await self._conversations.is_member(conversation_id, caller):
            raise not_found(conversation_id)
        members = await self._member_ids(conversation_id, caller)
        others = [m for m in members if m != caller]
        await self._publisher.publish(others, _encode(typing_frame(conversation_id, caller)))

    # -- helpers ----------------------------------------------------------------------------

    async def allow_resume(self, caller: uuid.UUID) -> None:
        """Count a WebSocket resume against the caller's limit (RateLimited when over)."""
        await self._take(self._limits.resumes, caller, "resuming too often, slow down")

    async def _take(self, limit: TokenBucket | FixedWindow | None, caller: uuid.UUID, message: str, cost: int = 1) -> None:
        if limit is not None and cost > 0:
            await limit.take(str(caller), cost, message=message)

    def _check_members_per_request(self, user_ids: list[uuid.UUID], field: str) -> None:
        cap = self._limits.members_per_request
        if len(user_ids) > cap:
            raise InvalidInput(f"at most {cap} members per request", details={"field": field})

    async def _require_users(self, user_ids: list[uuid.UUID], *, field: str, caller: uuid.UUID | None = None) -> None:
        """The application-level foreign key: every user must exist on their shard, and so must
        the caller (an access token outlives a deleted account: no ghost may create or add)."""
        wanted = user_ids if caller is None else [caller, *user_ids]
        if not wanted:
            return
        found = await self._users.names(wanted)
        if caller is not None and caller not in found:
            raise Unauthenticated("your user no longer exists")
        unknown = [str(u) for u in user_ids if u not in found]
        if unknown:
            raise InvalidInput(
                f"no such user: {', '.join(unknown[:5])}", details={"field": field, "unknown": unknown}
            )

    async def _member_ids(self, conversation_id: uuid.UUID, caller: uuid.UUID) -> frozenset[uuid.UUID]:
        cached = self._members.get(conversation_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now and caller in cached[1]:
            return cached[1]
        members = await self._conversations.member_ids(conversation_id, caller)
        if members is None:
            raise not_found(conversation_id)
        if len(self._members) > 10_000:
            self._members.clear()
        entry = frozenset(members)
        self._members[conversation_id] = (now + MEMBERS_CACHE_S, entry)
        return entry

    async def _announce(self, change: ConversationChange) -> None:
        if change.frame is not None:
            await self._publisher.publish(change.notify, change.frame)

    async def _announce_message(self, sent: MessageChange) -> None:
        if sent.frame is not None:
            await self._publisher.publish(sent.members, sent.frame)


