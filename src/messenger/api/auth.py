"""Who is calling: the bearer access token of a request, verified without a database call."""

from __future__ import annotations

import uuid

from starlette.requests import Request

from messenger.api.context import context
from messenger.domain.errors import Unauthenticated


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be `Bearer <access token>`")
    return token.strip()


def caller(request: Request) -> uuid.UUID | None:
    """The authenticated user's id, None without a token; 401 for a bad or expired token."""
    token = bearer_token(request)
    if token is None:
        return None
    return context(request).tokens.verify_access(token).user_id


def require_caller(request: Request) -> uuid.UUID:
    user_id = caller(request)
    if user_id is None:
        raise Unauthenticated("this needs an access token: Authorization: Bearer <token>")
    return user_id
