"""The outbox relay: delivers each shard's cross-shard events, at least once, in order.

One relay design for the whole project (DESIGN.md, "Reads and writes"):

- A change and its event commit together on the source shard (`outbox.append_event`).
- A relay pass over a shard takes a transaction-level advisory lock on it (`try`: another
  relay holding it means that shard is being served, so this one moves on), claims a batch of
  pending events in id order with `FOR UPDATE SKIP LOCKED`, applies each through its handler to
  whatever shards it targets, and marks it delivered, all before committing. Several relay
  processes are safe: they share the shards between them, and one shard's events apply in order.
- A handler applies its effect on a target shard in one transaction together with a row in
  that shard's `applied_events` ledger (`outbox.first_application`), so re-delivery after a crash
  or a retry never applies an effect twice.
- A failure is retried with exponential backoff capped at a minute; later events of the same
  aggregate wait behind it so they never overtake it, and other aggregates go on (the claim
  skips blocked aggregates). An infrastructure failure (a shard down, partitioned, failing over
  or overloaded: `TRANSIENT`) is retried for ever, however long the outage: a shard that is
  down delays an effect, never loses it. Any other error is the event's own (a handler bug, a
  payload it cannot apply) and repeats the same way every time, so after `max_attempts` the
  event is parked as a dead letter: it still blocks its aggregate, `messenger check` lists it
  and /metrics raises `outbox_dead_letters` (the alert); `messenger check --repair` requeues it.
- A pass applies events only for `batch_budget_s`, then commits what it delivered: the batch is
  one transaction, and the API's transactions have a deadline (6 s). Without the budget, a
  batch of slow applies (a target shard partitioned: each apply waits out its deadline) ran past
  it, was rolled back with its deliveries and its failure marks, and the next pass claimed the
  same events again: nothing moved for any aggregate while the shard was slow (found by
  `messenger chaos`, partition fault).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg

from messenger.domain.errors import ShardBusy, ShardUnavailable
from messenger.domain.events import OutboxEvent
from messenger.storage.shards.fencing import fence_state
from messenger.storage.shards.router import ShardRouter
from messenger.storage.shards.transactions import ShardTransactions

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 7_146_918_423  # + shard index: one relay pass per source shard at a time

# Only events that are due, of aggregates with nothing earlier backing off or dead: an event
# that cannot be applied yet must not hold back other aggregates (DESIGN.md). Only the head of
# an aggregate ever fails (later ones wait behind it in the pass), so "has a row not due or
# dead" is exactly "blocked". Both sides use the partial indexes (outbox_pending, outbox_dead).
# Events in a range fenced on this shard (being copied here, frozen, or moved away) are not
# this shard's to relay now: their rows (and these events) belong to the shard that owns the
# range once the switch is over; the fence has a handful of rows, so this is a probe per row.
CLAIM_BATCH = """
WITH blocked AS (
    SELECT aggregate FROM outbox
    WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at > now()
    UNION
    SELECT aggregate FROM outbox WHERE dead_at IS NOT NULL AND delivered_at IS NULL
)
SELECT o.id, o.aggregate, o.type, o.payload, o.attempts
FROM outbox o
WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND o.next_attempt_at <= now()
  AND o.aggregate NOT IN (SELECT aggregate FROM blocked)
  AND NOT EXISTS (SELECT 1 FROM ring_fence f WHERE f.lo <= o.ring_pos AND o.ring_pos < f.hi)
ORDER BY o.id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
MARK_DELIVERED = "UPDATE outbox SET delivered_at = now(), last_error = NULL WHERE id = ANY(%s)"
MARK_FAILED = """
UPDATE outbox
SET attempts = attempts + 1,
    last_error = %s,
    next_attempt_at = now() + make_interval(secs => %s),
    dead_at = CASE WHEN %s AND attempts + 1 >= %s THEN now() END
WHERE id = %s
"""
# Each figure's predicate is its partial index's (outbox_pending, outbox_dead), so the planner
# reads those small indexes; `WHERE delivered_at IS NULL` alone implied neither and scanned the
# whole outbox, delivered rows included, on every /metrics scrape.
BACKLOG = """
SELECT pending.n, pending.age, dead.n
FROM (
    SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age
    FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL
) pending, (
    SELECT count(*) AS n FROM outbox WHERE dead_at IS NOT NULL AND delivered_at IS NULL
) dead
"""
DEAD_LETTERS = """
SELECT id, aggregate, type, attempts, last_error, dead_at
FROM outbox WHERE dead_at IS NOT NULL AND delivered_at IS NULL
ORDER BY id LIMIT %s
"""
# A dead letter goes back in line as if new; its aggregate's later events still wait behind it.
REQUEUE_DEAD = """
UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = now()
WHERE dead_at IS NOT NULL AND delivered_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """What a handler changed beyond what its event names, for the read caches to drop."""

    users_changed: frozenset[uuid.UUID] = frozenset()


Handler = Callable[[OutboxEvent, ShardTransactions], Awaitable[Applied | None]]
AfterApplied = Callable[[OutboxEvent, Applied | None], Awaitable[None]]
"""Told each event once its handler committed, with what the handler reported."""


@dataclass(frozen=True, slots=True)
class Backlog:
    shard: str
    pending: int
    oldest_age_s: float
    dead: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: Any
    aggregate: str
    type: str
    attempts: int
    last_error: str | None
    dead_at: Any


@dataclass(slots=True)
class PassResult:
    delivered: int = 0
    failed: int = 0
    skipped_shards: list[str] = field(default_factory=list)


TRANSIENT: tuple[type[BaseException], ...] = (
    ShardUnavailable, ShardBusy, TimeoutError, OSError, psycopg.OperationalError, psycopg.InterfaceError,
)
"""Failures of the infrastructure, not of the event: retried for ever, never a dead letter.
psycopg's OperationalError covers lost connections, pool timeouts, statement timeouts,
deadlocks and serialization failures (all of them succeed on a later try)."""


def is_transient(exc: BaseException) -> bool:
    """Also the resharding fence's refusal (a range moving: the write succeeds once it is)."""
    return isinstance(exc, TRANSIENT) or fence_state(exc) is not None


def backoff_seconds(attempts: int, base: float = 0.5, cap: float = 60.0) -> float:
    """Delay before the next try after `attempts` failed ones: 0.5 s, 1 s, 2 s, … up to a minute.
    The exponent is capped too: an event retried for a day has thousands of attempts, and
    2.0 ** 1024 overflows."""
    return min(cap, base * 2.0 ** min(max(0, attempts - 1), 32))


async def read_backlog(router: ShardRouter, shard: int) -> Backlog:
    """One shard's backlog as the API's /metrics reports it: from the replica when it has it (a
    scrape is not a write, and a little lag is fine for a gauge). Raises ShardUnavailable."""
    rows = await router.read(shard, BACKLOG, (), name="outbox_backlog")
    pending, age, dead = rows[0]
    return Backlog(router.shard_name(shard), int(pending), float(age), int(dead))


class OutboxRelay:
    def __init__(
        self,
        shards: ShardTransactions,
        handlers: Mapping[str, Handler],
        *,
        batch_size: int = 100,
        max_attempts: int = 12,
        apply_timeout_s: float = 5.0,
        batch_budget_s: float = 4.0,
        applied: AfterApplied | None = None,
    ) -> None:
        """`applied` runs after each event's handler committed (read caches drop what it changed).

        `batch_budget_s`: how long one pass over a shard applies events before it commits; each
        apply gets at most what is left of it. 4 s leaves the marks and the commit room inside
        the API's 6 s transaction deadline (`primary_timeout` × TRANSACTION_DEADLINE_FACTOR)."""
        self.shards = shards
        self.applied = applied
        self.handlers = dict(handlers)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.apply_timeout_s = apply_timeout_s
        self.batch_budget_s = batch_budget_s

    async def run_once(self) -> PassResult:
        """One pass over every shard's outbox; a shard that is down is skipped, not fatal."""
        result = PassResult()
        for shard in self.shards.shard_indexes:
            try:
                delivered, failed = await self._relay_shard(shard)
            except Exception as exc:  # the source shard itself is unreachable: try it next pass
                log.debug("relay: %s skipped: %s", self.shards.shard_name(shard), exc)
                result.skipped_shards.append(self.shards.shard_name(shard))
                continue
            result.delivered += delivered
            result.failed += failed
        return result

    async def run_forever(self, idle_interval_s: float = 0.1, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                outcome = await self.run_once()
            except Exception:  # never let the loop die; each pass logs its own trouble
                log.exception("relay pass failed")
                outcome = PassResult()
            if outcome.delivered == 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=idle_interval_s)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Relay until every shard's backlog is empty (for tests and tools)."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.run_once()
            try:
                backlog: list[Backlog] | Exception = await self.backlog()
            except Exception as exc:  # a shard coming back: its pool may need a moment
                backlog = exc
            if isinstance(backlog, list) and all(b.pending == 0 for b in backlog):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"outbox not drained in {timeout_s} s: {backlog}")
            await asyncio.sleep(0.05)

    async def backlog(self) -> list[Backlog]:
        return [await self.shard_backlog(shard) for shard in self.shards.shard_indexes]

    async def shard_backlog(self, shard: int) -> Backlog:
        """Pending events (count, age of the oldest) and dead letters in one shard's outbox."""
        async with self.shards.transaction(shard, name="outbox_backlog") as conn:
            cursor = await conn.execute(BACKLOG)
            pending, age, dead = await cursor.fetchone()  # type: ignore[misc]
        return Backlog(self.shards.shard_name(shard), int(pending), float(age), int(dead))

    async def dead_letters(self, shard: int, limit: int = 10) -> list[DeadLetter]:
        async with self.shards.transaction(shard, name="outbox_dead_letters") as conn:
            cursor = await conn.execute(DEAD_LETTERS, (limit,))
            return [DeadLetter(*row) for row in await cursor.fetchall()]

    async def requeue_dead(self, shard: int) -> int:
        """Put one shard's dead letters back in line (after fixing their cause); how many."""
        async with self.shards.transaction(shard, name="outbox_requeue_dead") as conn:
            cursor = await conn.execute(REQUEUE_DEAD)
            return cursor.rowcount

    async def _relay_shard(self, shard: int) -> tuple[int, int]:
        delivered: list[Any] = []
        failed = 0
        async with self.shards.transaction(shard, name="relay_outbox_batch") as conn:
            cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (RELAY_LOCK_KEY + shard,))
            row = await cursor.fetchone()
            if not row or not row[0]:
                return 0, 0  # another relay is on this shard right now
            cursor = await conn.execute(CLAIM_BATCH, (self.batch_size,))
            blocked: set[str] = set()  # aggregates whose earlier event failed in this pass
            budget_ends = time.monotonic() + self.batch_budget_s
            for event_id, aggregate, type_, payload, attempts in await cursor.fetchall():
                if aggregate in blocked:
                    blocked.add(aggregate)
                    continue
                left = budget_ends - time.monotonic()
                if left <= 0:  # the rest stay pending (unlocked at commit) for the next pass
                    break
                event = OutboxEvent(event_id, aggregate, type_, payload, attempts)
                try:
                    await asyncio.wait_for(self._apply(event), timeout=min(self.apply_timeout_s, left))
                except Exception as exc:
                    failed += 1
                    blocked.add(aggregate)
                    reason = f"{type(exc).__name__}: {exc}"[:500]
                    log.info("relay: %s %s failed (attempt %d): %s", type_, event_id, attempts + 1, reason)
                    await conn.execute(MARK_FAILED, (
                        reason, backoff_seconds(attempts + 1), not is_transient(exc), self.max_attempts, event_id,
                    ))
                    continue
                delivered.append(event_id)
            if delivered:
                await conn.execute(MARK_DELIVERED, (delivered,))
        return len(delivered), failed

    async def _apply(self, event: OutboxEvent) -> None:
        handler = self.handlers.get(event.type)
        if handler is None:
            raise LookupError(f"no handler for event type {event.type!r}")
        outcome = await handler(event, self.shards)
        if self.applied is not None:
            await self.applied(event, outcome)

