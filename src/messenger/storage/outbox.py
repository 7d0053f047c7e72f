"""Writing events to a shard's outbox, and the ledger that makes applying them idempotent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from messenger.domain.ids import new_id

_encode = msgspec.json.Encoder().encode


def _json(payload: dict[str, Any]) -> str:
    return _encode(payload).decode()

INSERT_EVENT = """
INSERT INTO outbox (id, aggregate, type, payload) VALUES (%s, %s, %s, %s)
"""

# Several events of one transaction in one statement (a send queues one per member shard):
# one round trip instead of one per event. Named parameters, so that a caller may send it in
# the same text as its own statement (simple query protocol: one round trip for both).
INSERT_EVENTS = """
INSERT INTO outbox (id, aggregate, type, payload)
SELECT * FROM unnest(%(outbox_ids)s::uuid[], %(outbox_aggregates)s::text[], %(outbox_types)s::text[],
                     %(outbox_payloads)s::jsonb[])
"""

RECORD_APPLIED = """
INSERT INTO applied_events (event_id, target) VALUES (%s, %s)
ON CONFLICT DO NOTHING
RETURNING 1
"""


async def append_event(
    conn: AsyncConnection[Any], aggregate: str, type_: str, payload: dict[str, Any]
) -> uuid.UUID:
    """Add an event to the outbox of the shard `conn` is on, inside the caller's transaction."""
    event_id = new_id()
    await conn.execute(INSERT_EVENT, (event_id, aggregate, type_, Jsonb(payload)))
    return event_id


def events_params(events: Sequence[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """INSERT_EVENTS's parameters for (aggregate, type, payload) events, in order (their ids
    are UUIDv7s made here in that order, so the relay sees them in it)."""
    return {
        "outbox_ids": [new_id() for _ in events],
        "outbox_aggregates": [aggregate for aggregate, _, _ in events],
        "outbox_types": [type_ for _, type_, _ in events],
        "outbox_payloads": [_json(payload) for _, _, payload in events],
    }


async def append_events(conn: AsyncConnection[Any], events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    """Add several events to the outbox of the shard `conn` is on, in one round trip."""
    if len(events) == 1:
        aggregate, type_, payload = events[0]
        await append_event(conn, aggregate, type_, payload)
    elif events:
        await conn.execute(INSERT_EVENTS, events_params(events))


async def first_application(conn: AsyncConnection[Any], event_id: uuid.UUID, target: str = "") -> bool:
    """Record that `event_id` is being applied here; False if it already was.

    Call it inside the transaction that applies the effect: the effect and its ledger row
    commit together, so a relayed-again event finds the row and skips the effect.
    `target` tells apart several effects of one event on the same shard.
    """
    cursor = await conn.execute(RECORD_APPLIED, (event_id, target))
    return await cursor.fetchone() is not None
