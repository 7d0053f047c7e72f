"""Every outbox event type and the handler the relay applies it with: the one registry.

Events about a user fan out to several features. Each feature adds its own step to the
tuples below (idempotent, like every handler: the relay delivers at least once); the steps
run in order and the event is delivered when all of them have succeeded.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from messenger.domain.events import OutboxEvent
from messenger.storage.inbox import INBOX_UPDATE, READ_MARKER
from messenger.storage.relay.accounts import (
    confirm_registered_claims,
    free_deleted_users_claims,
    settle_changed_login,
)
from messenger.storage.relay.follows import (
    finish_batched_deletion,
    refresh_renamed_users_copies,
    remove_deleted_users_follows,
    sync_reverse_edge,
)
from messenger.storage.relay.messaging import (
    apply_inbox_update,
    apply_read_marker,
    remove_deleted_users_memberships,
    rename_sender_in_messages,
    tombstone_deleted_senders,
)
from messenger.storage.relay.runner import Applied, Handler
from messenger.storage.shards.transactions import ShardTransactions

# user.deleted: the user's own shard already lost everything of theirs by cascade; these
# clean up what other shards hold about them.
USER_DELETED_STEPS: tuple[Handler, ...] = (
    free_deleted_users_claims,
    remove_deleted_users_follows,
    remove_deleted_users_memberships,
    tombstone_deleted_senders,
)

# user.renamed: copies of the user's names kept elsewhere for speed.
USER_RENAMED_STEPS: tuple[Handler, ...] = (refresh_renamed_users_copies, rename_sender_in_messages)


async def clean_up_deleted_user(event: OutboxEvent, shards: ShardTransactions) -> Applied:
    users_changed: set[uuid.UUID] = set()
    for step in USER_DELETED_STEPS:
        applied = await step(event, shards)
        if applied is not None:
            users_changed |= applied.users_changed
    return Applied(frozenset(users_changed))


async def propagate_rename(event: OutboxEvent, shards: ShardTransactions) -> None:
    for step in USER_RENAMED_STEPS:
        await step(event, shards)


HANDLERS: Mapping[str, Handler] = {
    "account.registered": confirm_registered_claims,
    "account.login_changed": settle_changed_login,
    "user.renamed": propagate_rename,
    "user.deleted": clean_up_deleted_user,
    "user.deleting": finish_batched_deletion,
    INBOX_UPDATE: apply_inbox_update,
    READ_MARKER: apply_read_marker,
    # One reconciling handler for both: it reads the follower's end and mirrors it.
    "follow.created": sync_reverse_edge,
    "follow.removed": sync_reverse_edge,
}


# Events whose handlers change users rows (their follow counters), and whose: a read cache of
# users drops them once the handler committed. user.deleted decrements the counters of every
# user who followed or was followed by the deleted one, on any shard: its handler names them
# (Applied.users_changed); past MAX_NAMED_USERS, or on a retry, every cache is cleared instead.
_FOLLOW_EVENTS = ("follow.created", "follow.removed")
MAX_NAMED_USERS = 1000


def users_rows_changed(event: OutboxEvent, applied: Applied | None = None) -> tuple[uuid.UUID, ...] | None:
    """The users whose row applying `event` changed (`applied`: what its handler reported);
    None: possibly any user."""
    if event.type in _FOLLOW_EVENTS:
        return uuid.UUID(event.payload["follower_id"]), uuid.UUID(event.payload["followee_id"])
    if event.type == "user.deleted":
        # A retry: an earlier attempt may have committed batches before it failed, and a
        # failed attempt reports nothing.
        if applied is None or event.attempts > 0 or len(applied.users_changed) > MAX_NAMED_USERS:
            return None
        return tuple(applied.users_changed)
    return ()


def memberships_changed(event: OutboxEvent) -> bool:
    """Whether applying `event` may have removed conversation memberships (in conversations
    nobody names cheaply: a memberships cache drops everything)."""
    return event.type == "user.deleted"
