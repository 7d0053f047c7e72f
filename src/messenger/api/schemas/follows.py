"""Bodies of the follow endpoints (msgspec: encode in one pass, OpenAPI from the structs)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec


class FollowOut(msgspec.Struct):
    follower_id: uuid.UUID
    followee_id: uuid.UUID
    followed_at: datetime


class FollowEntryOut(msgspec.Struct):
    id: Annotated[uuid.UUID, msgspec.Meta(description="The user at the other end")]
    first_name: Annotated[str, msgspec.Meta(description="Copied for speed; follows a rename within seconds")]
    last_name: str
    followed_at: datetime


class FollowPageOut(msgspec.Struct):
    items: list[FollowEntryOut]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="Pass as `cursor` for the next page; null at the end")
    ]
