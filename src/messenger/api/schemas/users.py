"""Request and response bodies: msgspec structs that decode, validate and encode in one pass,
and from which the OpenAPI schemas are generated."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from messenger.domain.users import NAME_MAX_LENGTH, NAME_MIN_LENGTH

Name = Annotated[
    str,
    msgspec.Meta(
        description=f"{NAME_MIN_LENGTH} to {NAME_MAX_LENGTH} characters after trimming whitespace",
        examples=["Ada"],
    ),
]


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    first_name: Name
    last_name: Name


class UserReplace(msgspec.Struct, forbid_unknown_fields=True):
    first_name: Name
    last_name: Name


class UserPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; at least one must be."""

    first_name: Name | msgspec.UnsetType = msgspec.UNSET
    last_name: Name | msgspec.UnsetType = msgspec.UNSET


class UserOut(msgspec.Struct):
    id: Annotated[uuid.UUID, msgspec.Meta(description="UUIDv7, time-ordered")]
    first_name: str
    last_name: str
    created_at: datetime
    updated_at: datetime
    following_count: Annotated[int, msgspec.Meta(description="Users this user follows")]
    followers_count: Annotated[
        int,
        msgspec.Meta(description="Users following this user; follows reach it through the relay, "
                     "normally within a second"),
    ]


class UserPage(msgspec.Struct):
    items: list[UserOut]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="Pass as `cursor` for the next page; null at the end")
    ]


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any]


class ErrorBody(msgspec.Struct):
    error: ErrorDetail
