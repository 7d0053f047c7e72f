"""HTTP routes of conversations, members, messages, read markers and the inbox.

Every route needs an access token. A conversation that does not exist and one the caller is
not a member of get the same 404: outsiders cannot probe which conversations exist.
"""

from __future__ import annotations

import uuid

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.api.auth import require_caller
from messenger.api.bodies import GROUP_BODY_BYTES, read_body
from messenger.api.context import context
from messenger.api.errors import HttpError
from messenger.api.responses import JSON, encode
from messenger.api.schemas.conversations import (
    ConversationCreate,
    MembersAdd,
    MessageCreate,
    MessagePatch,
    ReadBody,
)
from messenger.domain.conversations import ConversationView
from messenger.domain.errors import InvalidInput
from messenger.domain.ids import parse_id
from messenger.services.messaging import DEFAULT_PAGE_SIZE

PREFIX = "/api/v1/conversations"
_PRIVATE = {"Cache-Control": "private, no-store"}
_create = msgspec.json.Decoder(ConversationCreate)
_members = msgspec.json.Decoder(MembersAdd)
_message = msgspec.json.Decoder(MessageCreate)
_patch = msgspec.json.Decoder(MessagePatch)
_read = msgspec.json.Decoder(ReadBody)


def _path_id(request: Request, name: str) -> uuid.UUID:
    try:
        return parse_id(request.path_params[name], field=name)
    except InvalidInput:
        raise HttpError(
            400, "invalid_id", f"{name} must be a UUID", {"field": name, "id": request.path_params[name]}
        ) from None


def _query_id(request: Request, name: str) -> uuid.UUID | None:
    raw = request.query_params.get(name) or None
    if raw is None:
        return None
    return parse_id(raw, field=name)


def _query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name) or str(default)
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", details={"field": name}) from None


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(body), status, {**_PRIVATE, **(headers or {})}, JSON)


def _view(view: ConversationView) -> dict[str, object]:
    return {"conversation": view.conversation, "members": view.members}


async def create_conversation(request: Request) -> Response:
    caller = require_caller(request)
    body = await read_body(request, _create, GROUP_BODY_BYTES)
    service = context(request).messaging
    if body.type == "direct":
        if body.user_id is msgspec.UNSET:
            raise InvalidInput("a direct conversation needs user_id", details={"field": "user_id"})
        if body.title is not msgspec.UNSET or body.member_ids is not msgspec.UNSET:
            raise InvalidInput("a direct conversation has no title or member_ids", details={"field": "type"})
        view, created = await service.open_direct(caller, body.user_id)
    else:
        if body.title is msgspec.UNSET:
            raise InvalidInput("a group needs a title", details={"field": "title"})
        if body.user_id is not msgspec.UNSET:
            raise InvalidInput("a group takes member_ids, not user_id", details={"field": "user_id"})
        members = [] if body.member_ids is msgspec.UNSET else body.member_ids
        view, created = await service.create_group(caller, body.title, members), True
    location = {"Location": f"{PREFIX}/{view.conversation.id}"}
    return _json(_view(view), 201 if created else 200, location)


async def get_conversation(request: Request) -> Response:
    caller = require_caller(request)
    view = await context(request).messaging.get(caller, _path_id(request, "conversation_id"))
    return _json(_view(view))


async def add_members(request: Request) -> Response:
    caller = require_caller(request)
    conversation_id = _path_id(request, "conversation_id")
    body = await read_body(request, _members)
    view = await context(request).messaging.add_members(caller, conversation_id, body.user_ids)
    return _json(_view(view))


async def remove_member(request: Request) -> Response:
    caller = require_caller(request)
    conversation_id = _path_id(request, "conversation_id")
    await context(request).messaging.remove_member(caller, conversation_id, _path_id(request, "user_id"))
    return Response(None, 204)


async def messages(request: Request) -> Response:
    caller = require_caller(request)
    conversation_id = _path_id(request, "conversation_id")
    service = context(request).messaging
    if request.method == "POST":
        body = await read_body(request, _message)
        message, created = await service.send(caller, conversation_id, body.body, body.client_message_id)
        return _json(message, 201 if created else 200, {"Location": f"{PREFIX}/{conversation_id}/messages/{message.id}"})
    page = await service.page(
        caller, conversation_id,
        before=_query_id(request, "before"), after=_query_id(request, "after"),
        limit=_query_int(request, "limit", DEFAULT_PAGE_SIZE),
    )
    return _json({"items": page.items, "has_more": page.has_more})


async def message_item(request: Request) -> Response:
    caller = require_caller(request)
    conversation_id = _path_id(request, "conversation_id")
    message_id = _path_id(request, "message_id")
    service = context(request).messaging
    if request.method == "DELETE":
        await service.delete(caller, conversation_id, message_id)
        return Response(None, 204)
    body = await read_body(request, _patch)
    return _json(await service.edit(caller, conversation_id, message_id, body.body))


async def mark_read(request: Request) -> Response:
    caller = require_caller(request)
    conversation_id = _path_id(request, "conversation_id")
    body = await read_body(request, _read)
    marker = await context(request).messaging.mark_read(caller, conversation_id, body.message_id)
    return _json({"read_message_id": marker.message_id})


async def events(request: Request) -> Response:
    """The conversation's events after seq `after`, as the WebSocket delivers them."""
    caller = require_caller(request)
    conversation_id = _path_id(request, "conversation_id")
    frames = await context(request).messaging.events(
        caller, conversation_id, _query_int(request, "after", 0), _query_int(request, "limit", 100)
    )
    return Response(b'{"items":[' + b",".join(frames) + b"]}", 200, _PRIVATE, JSON)


async def my_conversations(request: Request) -> Response:
    caller = require_caller(request)
    page = await context(request).messaging.inbox(
        caller, cursor=request.query_params.get("cursor") or None,
        limit=_query_int(request, "limit", DEFAULT_PAGE_SIZE),
    )
    return _json({"items": page.items, "next_cursor": page.next_cursor})


routes = [
    Route(PREFIX, create_conversation, methods=["POST"], name="conversations"),
    Route(PREFIX + "/{conversation_id}", get_conversation, methods=["GET"], name="conversation"),
    Route(PREFIX + "/{conversation_id}/members", add_members, methods=["POST"], name="members"),
    Route(PREFIX + "/{conversation_id}/members/{user_id}", remove_member, methods=["DELETE"], name="member"),
    Route(PREFIX + "/{conversation_id}/messages", messages, methods=["GET", "POST"], name="messages"),
    Route(PREFIX + "/{conversation_id}/messages/{message_id}", message_item, methods=["PATCH", "DELETE"],
          name="message"),
    Route(PREFIX + "/{conversation_id}/read", mark_read, methods=["POST"], name="read"),
    Route(PREFIX + "/{conversation_id}/events", events, methods=["GET"], name="conversation_events"),
    Route("/api/v1/me/conversations", my_conversations, methods=["GET"], name="my_conversations"),
]
