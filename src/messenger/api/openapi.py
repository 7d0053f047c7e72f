"""The OpenAPI document, built once from the msgspec structs, and a Swagger UI page."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from messenger.api.schemas.accounts import UserByUsernameOut
from messenger.api.schemas.conversations import (
    ConversationCreate,
    ConversationOut,
    InboxPageOut,
    MembersAdd,
    MessageCreate,
    MessageOut,
    MessagePageOut,
    MessagePatch,
    ReadBody,
    ReadOut,
)
from messenger.api.schemas.follows import FollowOut, FollowPageOut
from messenger.api.schemas.users import (
    ErrorBody,
    UserCreate,
    UserOut,
    UserPage,
    UserPatch,
    UserReplace,
)
from messenger.domain.users import NAME_MAX_LENGTH, NAME_MIN_LENGTH
from messenger.services.cluster import ClusterSnapshot
from messenger.services.users import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

_REF = "#/components/schemas/{name}"
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'")
"""Swagger UI sets inline styles and data: images; everything else only from this server."""


def _ref(struct: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _json(struct: type) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(struct)}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON or id, or `offset` given",
        401: "No valid access token",
        404: "No such user (or route)",
        413: "Body larger than the limit",
        403: "Not allowed (e.g. not the sender, not an admin)",
        409: "Conflicts with the conversation's state (direct, member limit, deleted message)",
        415: "Body is not JSON",
        422: "A field is missing, of the wrong type, unknown, or out of range",
        429: "Sending too fast; Retry-After says when to try again",
        503: "A shard this request needs is unavailable; `details.shard` names it",
    }
    return {str(s): {"description": text[s], "content": _json(ErrorBody)} for s in statuses}


def build_openapi() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [UserCreate, UserReplace, UserPatch, UserOut, UserPage, FollowOut, FollowPageOut, ErrorBody,
         UserByUsernameOut, ClusterSnapshot, *_MESSAGING_SCHEMAS],
        ref_template=_REF,
    )
    user_id = {
        "name": "user_id", "in": "path", "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    token = {
        "name": "X-Consistency-Token", "in": "header", "required": False,
        "description": "Token returned by a write; optional, read-your-writes holds without it",
        "schema": {"type": "string"},
    }

    def write_body(struct: type) -> dict[str, Any]:
        return {"required": True, "content": _json(struct)}

    user_ok = {"description": "The user", "content": _json(UserOut)}
    item = {
        "get": {
            "summary": "Get a user", "operationId": "getUser", "parameters": [user_id, token],
            "responses": {"200": user_ok, **_errors(400, 404, 503)},
        },
        "put": {
            "summary": "Replace a user's names", "operationId": "replaceUser",
            "parameters": [user_id], "requestBody": write_body(UserReplace),
            "responses": {"200": user_ok, **_errors(400, 404, 413, 415, 422, 503)},
        },
        "patch": {
            "summary": "Change some of a user's names", "operationId": "patchUser",
            "parameters": [user_id], "requestBody": write_body(UserPatch),
            "responses": {"200": user_ok, **_errors(400, 404, 413, 415, 422, 503)},
        },
        "delete": {
            "summary": "Delete a user", "operationId": "deleteUser", "parameters": [user_id],
            "responses": {"204": {"description": "Deleted"}, **_errors(400, 404, 503)},
        },
    }
    collection = {
        "post": {
            "summary": "Create a user", "operationId": "createUser",
            "description": f"Names are {NAME_MIN_LENGTH}-{NAME_MAX_LENGTH} characters after trimming.",
            "requestBody": write_body(UserCreate),
            "responses": {
                "201": {
                    "description": "Created; `Location` names the new user",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": _json(UserOut),
                },
                **_errors(400, 413, 415, 422, 503),
            },
        },
        "get": {
            "summary": "List users in id (creation) order across all shards",
            "operationId": "listUsers",
            "parameters": [
                {"name": "limit", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"},
                 "description": "The previous page's next_cursor"},
                {"name": "order", "in": "query",
                 "schema": {"type": "string", "enum": ["asc", "desc"], "default": "asc"}},
            ],
            "responses": {
                "200": {"description": "A page", "content": _json(UserPage)},
                **_errors(400, 422, 503),
            },
        },
    }

    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    follow = {
        "put": {
            "summary": "Follow this user as the caller", "operationId": "followUser",
            "description": "Idempotent: 201 when the follow is new, 200 when it existed. The "
                           "followee's followers list shows it once the relay has run (normally "
                           "well under a second).",
            "parameters": [user_id], "security": bearer,
            "responses": {
                "201": {"description": "Now following", "content": _json(FollowOut)},
                "200": {"description": "Already following", "content": _json(FollowOut)},
                **_errors(400, 401, 404, 422, 503),
            },
        },
        "delete": {
            "summary": "Stop following this user", "operationId": "unfollowUser",
            "parameters": [user_id], "security": bearer,
            "responses": {"204": {"description": "Not following (any more)"}, **_errors(400, 401, 422, 503)},
        },
    }

    def follow_list(summary: str, operation: str) -> dict[str, Any]:
        return {"get": {
            "summary": summary, "operationId": operation,
            "parameters": [
                user_id,
                {"name": "limit", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"},
                 "description": "The previous page's next_cursor"},
            ],
            "responses": {"200": {"description": "A page, newest follow first",
                                  "content": _json(FollowPageOut)}, **_errors(400, 404, 422, 503)},
        }}

    def plain(summary: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "Messenger API", "version": "1"},
        "paths": {
            "/api/v1/users": collection,
            "/api/v1/users/{user_id}": item,
            "/api/v1/users/{user_id}/follow": follow,
            "/api/v1/users/{user_id}/following": follow_list("Whom this user follows", "listFollowing"),
            "/api/v1/users/{user_id}/followers": follow_list("Who follows this user", "listFollowers"),
            "/api/v1/shards/stats": plain("Per-shard counts, shares, health, lag, pools"),
            "/health": plain("Liveness"),
            "/ready": plain("Readiness: every shard reachable, schema at head (503 if not)"),
            "/metrics": plain("Prometheus metrics"),
            **messaging_paths(),
            **lookup_paths(),
            **ops_paths(),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "ops": {"type": "http", "scheme": "bearer",
                        "description": "The operator token, MESSENGER_OPS_TOKEN"},
            },
        },
    }


def lookup_paths() -> dict[str, Any]:
    """Finding a person by username (the web client's "new chat" box)."""
    return {"/api/v1/users/by-username/{username}": {"get": {
        "summary": "The user a username names (any letter case), to open a conversation with",
        "operationId": "getUserByUsername",
        "description": "Looked up through the username's claim on its shard, then the holder's "
                       "account on the user's shard. A name that is only reserved (registration or "
                       "rename in flight), or that is not a valid username, names nobody: 404.",
        "security": [{"bearer": []}],
        "parameters": [{"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The user", "content": _json(UserByUsernameOut)},
            "401": {"description": "No or bad access token", "content": _json(ErrorBody)},
            "404": {"description": "No user has this username", "content": _json(ErrorBody)},
            **_errors(503),
        },
    }}}


def ops_paths() -> dict[str, Any]:
    """The operator's endpoints behind the ops token."""
    return {"/api/v1/ops/cluster": {"get": {
        "summary": "Every shard's servers, lag, connections, rows vs ring share, relay backlog",
        "operationId": "getClusterOverview",
        "description": "What the /cluster page shows; readings are at most a second old.",
        "security": [{"ops": []}],
        "responses": {
            "200": {"description": "The snapshot", "content": _json(ClusterSnapshot)},
            "401": {"description": "No or wrong ops token", "content": _json(ErrorBody)},
            "403": {"description": "No ops token is configured (MESSENGER_OPS_TOKEN)",
                    "content": _json(ErrorBody)},
        },
    }}}


_MESSAGING_SCHEMAS = [
    ConversationCreate, ConversationOut, MembersAdd, MessageCreate, MessagePatch, MessageOut,
    MessagePageOut, ReadBody, ReadOut, InboxPageOut,
]
_NOT_MEMBER = (
    "No such conversation, or the caller is not a member of it: the two are not told apart, "
    "so outsiders cannot learn which conversations exist"
)


def messaging_paths() -> dict[str, Any]:
    """Conversations, messages, the inbox and the WebSocket. All need `Authorization: Bearer`."""
    security: list[dict[str, list[str]]] = [{"bearer": []}]

    def op(summary: str, *, body: type | None = None, ok: tuple[str, str, type | None] = ("200", "OK", None),
           params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = (400, 404, 503)) -> dict[str, Any]:
        status, description, schema = ok
        response: dict[str, Any] = {"description": description}
        if schema is not None:
            response["content"] = _json(schema)
        responses = {status: response, "401": {"description": "No or bad access token", "content": _json(ErrorBody)}}
        for code in errors:
            text = _NOT_MEMBER if code == 404 else None
            entry = _errors(code)[str(code)]
            responses[str(code)] = {**entry, "description": text or entry["description"]}
        operation: dict[str, Any] = {"summary": summary, "security": security, "responses": responses,
                                     "parameters": params or []}
        if body is not None:
            operation["requestBody"] = {"required": True, "content": _json(body)}
        return operation

    def path(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
                for n in names]

    def query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": kind}}

    prefix = "/api/v1/conversations"
    write_errors = (400, 404, 413, 415, 422, 503)
    return {
        prefix: {"post": op(
            "Open a direct conversation (200 if it existed, 201 if created) or create a group (201)",
            body=ConversationCreate, ok=("201", "Created (200: the direct conversation existed)", ConversationOut),
            errors=(400, 413, 415, 422, 503))},
        prefix + "/{conversation_id}": {"get": op(
            "A conversation with its members and their read markers", params=path("conversation_id"),
            ok=("200", "The conversation", ConversationOut))},
        prefix + "/{conversation_id}/members": {"post": op(
            "Add members (group admins; 409 for direct conversations or past the member limit)",
            body=MembersAdd, params=path("conversation_id"), ok=("200", "The conversation", ConversationOut),
            errors=(*write_errors, 403, 409))},
        prefix + "/{conversation_id}/members/{user_id}": {"delete": op(
            "Leave (your own id) or remove a member (group admins)", params=path("conversation_id", "user_id"),
            ok=("204", "Removed", None), errors=(400, 403, 404, 409, 503))},
        prefix + "/{conversation_id}/messages": {
            "post": op("Send a message; a retry with the same client_message_id returns the stored one (200)",
                       body=MessageCreate, params=path("conversation_id"),
                       ok=("201", "Sent (200: a retry of a stored send)", MessageOut), errors=(*write_errors, 429)),
            "get": op("A page of messages, newest first (keyset on id)", params=[
                *path("conversation_id"),
                query("before", "Only messages older than this message id"),
                query("after", "Only messages newer than this id: the page right after it"),
                query("limit", "1-100, default 50", "integer")],
                ok=("200", "A page", MessagePageOut), errors=(400, 404, 422, 503)),
        },
        prefix + "/{conversation_id}/messages/{message_id}": {
            "patch": op("Edit a message (its sender)", body=MessagePatch, params=path("conversation_id", "message_id"),
                        ok=("200", "The message", MessageOut), errors=(*write_errors, 403, 409)),
            "delete": op("Delete a message (its sender or a group admin): it stays as a tombstone",
                         params=path("conversation_id", "message_id"), ok=("204", "Deleted", None),
                         errors=(400, 403, 404, 503)),
        },
        prefix + "/{conversation_id}/read": {"post": op(
            "Move your read marker forward to a message", body=ReadBody, params=path("conversation_id"),
            ok=("200", "The read marker", ReadOut), errors=write_errors)},
        prefix + "/{conversation_id}/events": {"get": op(
            "The conversation's events after seq `after`, as the WebSocket sends them",
            params=[*path("conversation_id"), query("after", "A seq (default 0)", "integer"),
                    query("limit", "1-500, default 100", "integer")], errors=(400, 404, 422, 503))},
        "/api/v1/me/conversations": {"get": op(
            "Your conversations by last activity, with previews and unread counts (your shard only)",
            params=[query("cursor", "The previous page's next_cursor"), query("limit", "1-100, default 50", "integer")],
            ok=("200", "A page", InboxPageOut), errors=(422, 503))},
        "/api/v1/ws": {"get": {
            "summary": "WebSocket of live events (see README: Live delivery)", "security": security,
            "parameters": [query("access_token", "The access token (or Authorization: Bearer)"),
                           query("resume", "1: hold events until the client's resume frame is served")],
            "responses": {"101": {"description": "Switching protocols"}},
        }},
    }


# Swagger UI's files come from the installed swagger-ui-bundle-v2 package (api/pages.py mounts
# them at /docs/assets), never from a CDN: the page works on a machine without internet access.
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Messenger API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head><body><div id="ui" data-openapi="/openapi.json"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body></html>"""


def openapi_routes() -> list[Route]:
    document = msgspec.json.encode(build_openapi())

    async def openapi(_request: Request) -> Response:
        return Response(document, 200, None, "application/json")

    async def docs(_request: Request) -> Response:
        return HTMLResponse(_DOCS_PAGE, headers={"Content-Security-Policy": DOCS_CSP})

    return [
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/docs", docs, methods=["GET"], name="docs"),
    ]
