"""HTTP routes of accounts and sign-in: /api/v1/accounts, /api/v1/auth/*, /api/v1/me."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.api.auth import require_caller
from messenger.api.bodies import read_body
from messenger.api.context import context
from messenger.api.responses import JSON, encode
from messenger.api.schemas.accounts import (
    AccountCreate,
    AccountOut,
    LoginBody,
    MeOut,
    MePatch,
    PasswordChange,
    RefreshBody,
    TokensOut,
    UserByUsernameOut,
)
from messenger.domain.errors import InvalidInput
from messenger.services.accounts import Profile, Registration, TokenPair

_create = msgspec.json.Decoder(AccountCreate)
_login = msgspec.json.Decoder(LoginBody)
_refresh = msgspec.json.Decoder(RefreshBody)
_patch = msgspec.json.Decoder(MePatch)
_password = msgspec.json.Decoder(PasswordChange)
_NO_STORE = {"Cache-Control": "no-store"}  # tokens and personal data stay out of caches


def _me(profile: Profile) -> bytes:
    a = profile.account
    return encode(MeOut(a.user_id, profile.first_name, profile.last_name,
                         AccountOut(a.id, a.username, a.email, a.created_at, a.updated_at)))


def _tokens(pair: TokenPair) -> Response:
    body = TokensOut(pair.access_token, pair.refresh_token, pair.user_id, pair.expires_in)
    return Response(encode(body), 200, _NO_STORE, JSON)


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _set(value: object) -> object | None:
    return None if value is msgspec.UNSET else value


async def register(request: Request) -> Response:
    body = await read_body(request, _create)
    profile = await context(request).accounts.register(
        Registration(body.username, body.email, body.password, body.first_name, body.last_name)
    )
    headers = {**_NO_STORE, "Location": "/api/v1/me"}
    return Response(_me(profile), 201, headers, JSON)


async def login(request: Request) -> Response:
    body = await read_body(request, _login)
    given = [v for v in (body.login, body.username, body.email) if v is not msgspec.UNSET]
    if len(given) != 1:
        raise InvalidInput("give exactly one of login, username or email", details={"field": "login"})
    pair = await context(request).accounts.login(str(given[0]), body.password, _client_address(request))
    return _tokens(pair)


async def refresh(request: Request) -> Response:
    body = await read_body(request, _refresh)
    return _tokens(await context(request).accounts.refresh(body.refresh_token))


async def logout(request: Request) -> Response:
    body = await read_body(request, _refresh)
    await context(request).accounts.logout(body.refresh_token)
    return Response(None, 204)


async def me(request: Request) -> Response:
    user_id = require_caller(request)
    service = context(request).accounts
    if request.method == "DELETE":
        await service.delete_me(user_id)
        return Response(None, 204)
    if request.method == "PATCH":
        body = await read_body(request, _patch)
        fields = {k: _set(getattr(body, k)) for k in ("first_name", "last_name", "username", "email")}
        if all(v is None for v in fields.values()):
            raise InvalidInput("nothing to change", details={"fields": sorted(fields)})
        profile = await service.update_me(user_id, **fields)  # type: ignore[arg-type]
    else:
        profile = await service.me(user_id)
    return Response(_me(profile), 200, _NO_STORE, JSON)


async def change_password(request: Request) -> Response:
    user_id = require_caller(request)
    body = await read_body(request, _password)
    await context(request).accounts.change_password(user_id, body.current_password, body.new_password)
    return Response(None, 204)


async def user_by_username(request: Request) -> Response:
    """GET /api/v1/users/by-username/{username}: find a person to talk to (signed-in callers)."""
    require_caller(request)
    profile = await context(request).accounts.find_by_username(request.path_params["username"])
    body = UserByUsernameOut(profile.account.user_id, profile.account.username, profile.first_name,
                             profile.last_name)
    return Response(encode(body), 200, {"Cache-Control": "private, no-store"}, JSON)


routes = [
    Route("/api/v1/accounts", register, methods=["POST"], name="accounts"),
    Route("/api/v1/auth/login", login, methods=["POST"], name="login"),
    Route("/api/v1/auth/refresh", refresh, methods=["POST"], name="refresh"),
    Route("/api/v1/auth/logout", logout, methods=["POST"], name="logout"),
    Route("/api/v1/me", me, methods=["GET", "PATCH", "DELETE"], name="me"),
    Route("/api/v1/me/password", change_password, methods=["POST"], name="me_password"),
    Route("/api/v1/users/by-username/{username}", user_by_username, methods=["GET"], name="user_by_username"),
]
