"""The read cache of conversation memberships, per worker: (conversation, user) -> member.

Only memberships are cached, never their absence: a user added to a conversation is a member
at once on every worker without any invalidation, and a non-member always costs a database
read. What can go stale is a member who left, was removed or whose account was deleted: the
write that removes them drops the key (ConversationStore.remove_member, before its response)
and the relay's user.deleted clears every worker's cache once the memberships are gone. The
value says nothing of the member's role (a promotion changes it without touching the key):
what needs the role reads it under the conversation's lock.
"""

from __future__ import annotations

import uuid

from messenger.metrics import Metrics
from messenger.storage.cache.keyed import KeyedCache

CACHE_NAME = "members"

MembershipKey = tuple[uuid.UUID, uuid.UUID]
"""(conversation_id, user_id)"""


def membership_text(key: MembershipKey) -> str:
    return f"{key[0]}:{key[1]}"


def parse_membership(text: str) -> MembershipKey:
    conversation, _, user = text.partition(":")
    return uuid.UUID(conversation), uuid.UUID(user)


class MembershipCache(KeyedCache[MembershipKey, bool]):
    def __init__(
        self, max_entries: int, *, ttl_s: float = 30.0, hold_s: float = 0.0, metrics: Metrics | None = None
    ) -> None:
        super().__init__(
            CACHE_NAME, max_entries, key_text=membership_text, parse_key=parse_membership, ttl_s=ttl_s,
            hold_s=hold_s, metrics=metrics,
        )
