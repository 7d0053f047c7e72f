"""Pruning what is kept only for a while: delivered outbox rows, the applied-events ledger,
used or expired refresh tokens, and the conversations' event log. Without it these tables only
grow.

Each statement deletes at most `batch` rows (by ctid, picked in the same statement), each in its
own short transaction, with a pause between, so pruning never holds locks or bloats WAL in one
burst and yields to the relay and requests. The ledger outlives any redelivery window: an event
is redelivered only while its outbox row is undelivered, and delivered rows go after a day.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from messenger.domain.errors import ShardBusy, ShardUnavailable
from messenger.storage.shards.transactions import ShardTransactions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """How long each prunable kind of row is kept after it stopped mattering."""

    delivered_outbox: timedelta = timedelta(days=1)
    applied_events: timedelta = timedelta(days=7)
    refresh_tokens: timedelta = timedelta(days=1)  # after expiry or use
    event_log: timedelta = timedelta(days=30)
    batch: int = 1000
    pause_s: float = 0.05


# Pending and dead rows never match: delivered_at is set only on delivery, and a dead row keeps
# blocking its aggregate until an operator deals with it. Rows in a fenced range are skipped: the
# fence would refuse their delete, and the range's clean-up removes them after a move.
PRUNE_DELIVERED_OUTBOX = """
DELETE FROM outbox WHERE ctid = ANY(ARRAY(
    SELECT o.ctid FROM outbox o
    WHERE o.delivered_at < now() - %(keep)s AND o.dead_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM ring_fence f WHERE f.lo <= o.ring_pos AND o.ring_pos < f.hi)
    LIMIT %(batch)s))
"""
PRUNE_APPLIED_EVENTS = """
DELETE FROM applied_events WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM applied_events WHERE applied_at < now() - %(keep)s LIMIT %(batch)s))
"""
PRUNE_REFRESH_TOKENS = """
DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM refresh_tokens
    WHERE expires_at < now() - %(keep)s OR used_at < now() - %(keep)s
    LIMIT %(batch)s))
"""

# The event log (what `/events` and a WebSocket resume replay) keeps a conversation's recent
# events; its older ones become one `log.trimmed` frame at the seq of the newest of them, so a
# client resuming from before it learns that it must reload (the messages themselves stay in
# `messages`, served by the history pages). Seqs stay contiguous from the marker on. A batch
# is `batch` conversations; rows in fenced ranges wait for their move's clean-up.
PRUNE_EVENT_LOG = """
WITH old AS (
    SELECT e.conversation_id, max(e.seq) AS through
    FROM conversation_events e
    WHERE e.created_at < now() - %(keep)s AND e.type <> 'log.trimmed'
      AND NOT EXISTS (SELECT 1 FROM ring_fence f WHERE f.lo <= e.ring_pos AND e.ring_pos < f.hi)
    GROUP BY e.conversation_id
    LIMIT %(batch)s
),
gone AS (
    DELETE FROM conversation_events e USING old
    WHERE e.conversation_id = old.conversation_id AND e.seq < old.through
)
UPDATE conversation_events e
SET type = 'log.trimmed',
    frame = json_build_object('type', 'log.trimmed', 'conversation_id', e.conversation_id, 'seq', e.seq)
FROM old WHERE e.conversation_id = old.conversation_id AND e.seq = old.through
"""


class RetentionPruner:
    def __init__(self, shards: ShardTransactions, retention: Retention = Retention()) -> None:
        self._shards = shards
        self._retention = retention

    async def prune_once(self) -> dict[str, int]:
        """Delete every row past its retention on every shard; rows deleted, per table, and
        `failed`: the (table, shard) steps that failed. A shard that is down or busy is logged
        and skipped for this round; the other shards are pruned all the same."""
        r = self._retention
        deleted: dict[str, int] = {"failed": 0}
        for table, sql, keep in (
            ("outbox", PRUNE_DELIVERED_OUTBOX, r.delivered_outbox),
            ("applied_events", PRUNE_APPLIED_EVENTS, r.applied_events),
            ("refresh_tokens", PRUNE_REFRESH_TOKENS, r.refresh_tokens),
            ("conversation_events", PRUNE_EVENT_LOG, r.event_log),
        ):
            deleted[table] = 0
            for shard in self._shards.shard_indexes:
                try:
                    deleted[table] += await self._prune(shard, f"prune_{table}", sql, keep)
                except (ShardUnavailable, ShardBusy) as exc:
                    deleted["failed"] += 1
                    log.warning("pruning %s on %s failed, next round retries: %s",
                                table, self._shards.shard_name(shard), exc)
        return deleted

    async def _prune(self, shard: int, name: str, sql: str, keep: timedelta) -> int:
        total = 0
        while True:
            async with self._shards.transaction(shard, name=name) as conn:
                cursor = await conn.execute(sql, {"keep": keep, "batch": self._retention.batch})
                done = cursor.rowcount
            total += done
            if done < self._retention.batch:
                return total
            await asyncio.sleep(self._retention.pause_s)
