"""Bodies of the account and auth endpoints (msgspec: decode, validate, encode in one pass)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from messenger.api.schemas.users import Name

Secret = Annotated[str, msgspec.Meta(description="Never echoed back", examples=["correct horse battery"])]


class AccountCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(description="3-32 of a-z 0-9 _ . (case-insensitive)", examples=["ada.l"])]
    email: Annotated[str, msgspec.Meta(examples=["ada@example.com"])]
    password: Annotated[Secret, msgspec.Meta(description="8-128 characters")]
    first_name: Name
    last_name: Name


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    password: Secret
    login: Annotated[str | msgspec.UnsetType, msgspec.Meta(description="Username or email")] = msgspec.UNSET
    username: str | msgspec.UnsetType = msgspec.UNSET
    email: str | msgspec.UnsetType = msgspec.UNSET


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str


class MePatch(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; at least one must be."""

    first_name: Name | msgspec.UnsetType = msgspec.UNSET
    last_name: Name | msgspec.UnsetType = msgspec.UNSET
    username: str | msgspec.UnsetType = msgspec.UNSET
    email: str | msgspec.UnsetType = msgspec.UNSET


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Secret
    new_password: Secret


class AccountOut(msgspec.Struct):
    id: uuid.UUID
    username: str
    email: str
    created_at: datetime
    updated_at: datetime


class MeOut(msgspec.Struct):
    id: Annotated[uuid.UUID, msgspec.Meta(description="The user id")]
    first_name: str
    last_name: str
    account: AccountOut


class TokensOut(msgspec.Struct):
    access_token: str
    refresh_token: str
    user_id: uuid.UUID
    expires_in: Annotated[int, msgspec.Meta(description="Seconds the access token is valid")]
    token_type: str = "Bearer"


class UserByUsernameOut(msgspec.Struct):
    """Whom a username names: enough to open a conversation with them. No email."""

    id: Annotated[uuid.UUID, msgspec.Meta(description="The user id")]
    username: str
    first_name: str
    last_name: str
