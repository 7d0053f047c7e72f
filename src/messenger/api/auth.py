"""Who is calling: the bearer access token of a request, verified without a database call.

`SessionCheck` (raw ASGI, in front of every route) verifies a bearer token once, and refuses
the request with 401 when the token's session has ended (logout, password change, account
deleted: services/sessions.py), so no route acts for a ghost; routes then read the verified
claims through `caller` / `require_caller`. A request without a token passes through untouched
(routes that need one answer 401 themselves).
"""

from __future__ import annotations

import hmac
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from messenger.api.context import ApiContext, context
from messenger.api.errors import error_response
from messenger.domain.errors import Forbidden, Unauthenticated
from messenger.services.tokens import AccessClaims

_CLAIMS = "access_claims"


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
    claims: AccessClaims | None = request.scope.get("state", {}).get(_CLAIMS)
    if claims is not None:
        return claims.user_id
    token = bearer_token(request)
    if token is None:
        return None
    return context(request).tokens.verify_access(token).user_id


def require_caller(request: Request) -> uuid.UUID:
    user_id = caller(request)
    if user_id is None:
        raise Unauthenticated("this needs an access token: Authorization: Bearer <token>")
    return user_id


def require_ops_token(request: Request) -> None:
    """The operator's endpoints (/api/v1/ops/cluster, /api/v1/shards/stats, /metrics) need
    `Authorization: Bearer <MESSENGER_OPS_TOKEN>`, in every profile.

    No credential is 401 whatever the configuration (the same answer as every bearer route); a
    credential where none can be valid (no ops token configured) is 403: the endpoints are then
    off, never open, so a deployment that forgot the token exposes nothing.
    """
    given = bearer_token(request)
    if given is None:
        raise Unauthenticated("this needs the ops token: Authorization: Bearer <ops token>")
    expected = context(request).settings.ops_token
    if not expected:
        raise Forbidden("operator endpoints are off: set MESSENGER_OPS_TOKEN to enable them")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthenticated("the ops token is not valid")


class SessionCheck:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            try:
                token = bearer_token(request)
            except Unauthenticated:
                token = None  # malformed: the route answers it
            if token is not None:
                ctx: ApiContext = scope["app"].state.context
                try:
                    claims = ctx.tokens.verify_access(token)
                except Unauthenticated:
                    claims = None  # the route answers it, with the reason
                if claims is not None:
                    try:
                        await ctx.sessions.check(claims)
                    except Unauthenticated as exc:
                        response = error_response(401, exc.code, exc.message)
                        await response(scope, receive, send)
                        return
                    scope.setdefault("state", {})[_CLAIMS] = claims
        await self.app(scope, receive, send)
