"""Follows: who follows whom, and the rules a follow obeys (pure, no I/O)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from messenger.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Follow:
    """One edge as the follower sees it; `created` says whether this request made it."""

    follower_id: uuid.UUID
    followee_id: uuid.UUID
    created_at: datetime
    created: bool


@dataclass(frozen=True, slots=True)
class FollowEntry:
    """A row of a follow list: the user at the other end, with the names copied there."""

    user_id: uuid.UUID
    first_name: str
    last_name: str
    followed_at: datetime
    follow_id: uuid.UUID


def check_not_self(follower_id: uuid.UUID, followee_id: uuid.UUID) -> None:
    if follower_id == followee_id:
        raise InvalidInput("a user cannot follow itself", details={"id": str(followee_id)})
