"""Users: the entity and the rules its fields obey (pure, no I/O)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from messenger.domain.errors import InvalidInput

Order = Literal["asc", "desc"]
"""Listing order of users: by id, which is creation time (UUIDv7)."""

NAME_MIN_LENGTH = 1
NAME_MAX_LENGTH = 100
"""Names are counted in characters after trimming surrounding whitespace."""


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    first_name: str
    last_name: str
    created_at: datetime
    updated_at: datetime
    following_count: int = 0
    followers_count: int = 0


def clean_name(field: str, value: str) -> str:
    """Trim a name and check its length; raise InvalidInput naming the field otherwise."""
    cleaned = value.strip()
    if not NAME_MIN_LENGTH <= len(cleaned) <= NAME_MAX_LENGTH:
        raise InvalidInput(
            f"{field} must be {NAME_MIN_LENGTH} to {NAME_MAX_LENGTH} characters "
            f"(got {len(cleaned)} after trimming)",
            details={"field": field},
        )
    if "\x00" in cleaned:
        # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
        raise InvalidInput(f"{field} must not contain NUL characters", details={"field": field})
    return cleaned
