"""Writing events to a shard's outbox, and the ledger that makes applying them idempotent."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from messenger.domain.ids import new_id

INSERT_EVENT = """
INSERT INTO outbox (id, aggregate, type, payload) VALUES (%s, %s, %s, %s)
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


async def first_application(conn: AsyncConnection[Any], event_id: uuid.UUID, target: str = "") -> bool:
    """Record that `event_id` is being applied here; False if it already was.

    Call it inside the transaction that applies the effect: the effect and its ledger row
    commit together, so a relayed-again event finds the row and skips the effect.
    `target` tells apart several effects of one event on the same shard.
    """
    cursor = await conn.execute(RECORD_APPLIED, (event_id, target))
    return await cursor.fetchone() is not None
