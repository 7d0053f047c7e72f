"""HTTP routes of /api/v1/users: decode, call the service, encode. No SQL here."""

from __future__ import annotations

import uuid

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope, Send

from messenger.api.auth import caller
from messenger.api.bodies import read_body
from messenger.api.context import ApiContext, context
from messenger.api.errors import HttpError
from messenger.api.responses import JSON, encode
from messenger.api.schemas.users import UserCreate, UserPatch, UserReplace
from messenger.domain.errors import InvalidInput
from messenger.domain.ids import parse_id
from messenger.domain.users import Order
from messenger.services.users import DEFAULT_PAGE_SIZE

PREFIX = "/api/v1/users"
ITEM_PATH = PREFIX + "/{user_id}"
TOKEN_HEADER = "X-Consistency-Token"

_create = msgspec.json.Decoder(UserCreate)
_replace = msgspec.json.Decoder(UserReplace)
_patch = msgspec.json.Decoder(UserPatch)
_ORDERS: dict[str, Order] = {"asc": "asc", "desc": "desc"}


def path_user_id(request: Request) -> uuid.UUID:
    try:
        return parse_id(request.path_params["user_id"])
    except InvalidInput:
        raise HttpError(
            400, "invalid_id", "the user id must be a UUID", {"id": request.path_params["user_id"]}
        ) from None


def _written_headers(token: str | None, location: str | None = None) -> dict[str, str]:
    headers = {TOKEN_HEADER: token} if token else {}
    if location:
        headers["Location"] = location
    return headers


async def create_user(request: Request) -> Response:
    body = await read_body(request, _create)
    written = await context(request).users.create(body.first_name, body.last_name)
    location = f"{PREFIX}/{written.user.id}"
    return Response(
        encode(written.user), 201, _written_headers(written.token, location), JSON
    )


async def get_user(request: Request) -> Response:
    user = await context(request).users.get(
        path_user_id(request), token=request.headers.get(TOKEN_HEADER)
    )
    return Response(encode(user), 200, None, JSON)


_ITEM_PREFIX = PREFIX + "/"
_TOKEN_HEADER_RAW = TOKEN_HEADER.lower().encode()
_JSON_HEADER = (b"content-type", JSON.encode())


def fast_get_user_id(scope: Scope) -> str | None:
    """The id text when the request is `GET /api/v1/users/{id}` (no trailing slash) without
    an `Authorization` header (the session check must see those), else None."""
    if scope["method"] != "GET":
        return None
    path: str = scope["path"]
    if not path.startswith(_ITEM_PREFIX) or "/" in path[len(_ITEM_PREFIX):]:
        return None
    for name, _ in scope["headers"]:
        if name == b"authorization":
            return None
    return path[len(_ITEM_PREFIX):] or None


async def fast_user_body(ctx: ApiContext, scope: Scope, id_text: str) -> bytes:
    """`get_user`'s body, for the raw-ASGI GET by id (api/app.py MessengerApp): same service
    call and body as `get_user`; errors raise and the caller maps them like any route's."""
    try:
        user_id = parse_id(id_text)
    except InvalidInput:
        raise HttpError(400, "invalid_id", "the user id must be a UUID", {"id": id_text}) from None
    token = None
    for name, value in scope["headers"]:
        if name == _TOKEN_HEADER_RAW:
            token = value.decode("latin-1")
            break
    return encode(await ctx.users.get(user_id, token=token))


async def send_json(send: Send, body: bytes) -> None:
    """A 200 with a JSON body, as `Response(body, 200, None, JSON)` sends it."""
    headers = [(b"content-length", str(len(body)).encode()), _JSON_HEADER]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def replace_user(request: Request) -> Response:
    user_id = path_user_id(request)
    body = await read_body(request, _replace)
    written = await context(request).users.replace(
        user_id, body.first_name, body.last_name, caller=caller(request)
    )
    return Response(encode(written.user), 200, _written_headers(written.token), JSON)


async def patch_user(request: Request) -> Response:
    user_id = path_user_id(request)
    body = await read_body(request, _patch)
    written = await context(request).users.patch(
        user_id,
        None if body.first_name is msgspec.UNSET else body.first_name,
        None if body.last_name is msgspec.UNSET else body.last_name,
        caller=caller(request),
    )
    return Response(encode(written.user), 200, _written_headers(written.token), JSON)


async def delete_user(request: Request) -> Response:
    token = await context(request).users.delete(path_user_id(request), caller=caller(request))
    return Response(None, 204, _written_headers(token))


async def list_users(request: Request) -> Response:
    query = request.query_params
    if "offset" in query:
        raise HttpError(
            400,
            "offset_not_supported",
            "offset pagination is not supported: pass the previous page's next_cursor as `cursor`",
            {"field": "offset", "use": "cursor"},
        )
    raw_limit = query.get("limit") or str(DEFAULT_PAGE_SIZE)  # `limit=` means the default
    try:
        limit = int(raw_limit)
    except ValueError:
        raise HttpError(422, "invalid_input", "limit must be an integer", {"field": "limit"}) from None
    order = _ORDERS.get(query.get("order") or "asc")
    if order is None:
        raise HttpError(422, "invalid_input", "order must be asc or desc", {"field": "order"})
    page = await context(request).users.list(limit=limit, order=order, cursor=query.get("cursor") or None)
    return Response(encode({"items": page.items, "next_cursor": page.next_cursor}), 200, None, JSON)


_ITEM_HANDLERS = {
    "GET": get_user,
    "HEAD": get_user,
    "PUT": replace_user,
    "PATCH": patch_user,
    "DELETE": delete_user,
}


async def users_collection(request: Request) -> Response:
    if request.method == "POST":
        return await create_user(request)
    return await list_users(request)


async def users_item(request: Request) -> Response:
    return await _ITEM_HANDLERS[request.method](request)


# One route per path (so a wrong method gets a 405 listing every allowed one), and both
# spellings of the collection without a redirect: some clients post to the slash form.
routes = [
    Route(PREFIX, users_collection, methods=["GET", "POST"], name="users"),
    Route(PREFIX + "/", users_collection, methods=["GET", "POST"], name="users_slash"),
    Route(ITEM_PATH, users_item, methods=["GET", "PUT", "PATCH", "DELETE"], name="user"),
]
