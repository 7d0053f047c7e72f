"""Every outbox event type and the handler the relay applies it with: the one registry."""

from __future__ import annotations

from collections.abc import Mapping

from messenger.domain.events import OutboxEvent
from messenger.storage.account_events import (
    confirm_registered_claims,
    free_deleted_users_claims,
    settle_changed_login,
)
from messenger.storage.relay import Handler
from messenger.storage.transactions import ShardTransactions


async def ignore(event: OutboxEvent, shards: ShardTransactions) -> None:
    """Events no shard has to act on yet (kept so that emitting them is never an error)."""


async def clean_up_deleted_user(event: OutboxEvent, shards: ShardTransactions) -> None:
    await free_deleted_users_claims(event, shards)


HANDLERS: Mapping[str, Handler] = {
    "account.registered": confirm_registered_claims,
    "account.login_changed": settle_changed_login,
    "user.renamed": ignore,
    "user.deleted": clean_up_deleted_user,
}
