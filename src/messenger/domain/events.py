"""Cross-shard events: what a change on one shard asks other shards to do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event as written to a shard's outbox, in the same transaction as its cause."""

    id: uuid.UUID
    aggregate: str  # what it is about, e.g. "user:<uuid>"; events of one aggregate apply in order
    type: str  # e.g. "user.deleted"
    payload: dict[str, Any]
    attempts: int = 0
