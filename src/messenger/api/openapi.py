"""The OpenAPI document, built once from the msgspec structs, and a Swagger UI page."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from messenger.api.bodies import GROUP_BODY_BYTES
from messenger.api.context import context
from messenger.api.schemas.accounts import UserByUsernameOut
from messenger.api.schemas.conversations import (
    MAX_MEMBERS_PER_REQUEST,
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
from messenger.domain.conversations import (
    BODY_MAX_LENGTH,
    CLIENT_MESSAGE_ID_MAX_LENGTH,
    MEMBER_LIMIT,
    TITLE_MAX_LENGTH,
)
from messenger.domain.pages import MAX_PAGE_SIZE
from messenger.domain.users import NAME_MAX_LENGTH, NAME_MIN_LENGTH
from messenger.services.cluster import ClusterSnapshot
from messenger.services.messaging import DEFAULT_PAGE_SIZE as MESSAGES_PAGE_SIZE
from messenger.services.users import DEFAULT_PAGE_SIZE

_REF = "#/components/schemas/{name}"
DEFAULT_MAX_BODY_BYTES = 64 * 1024  # Settings.max_body_bytes's default
EVENTS_MAX_PAGE = 500  # the conversation log's page size
EVENTS_DEFAULT_PAGE = 100
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
        413: "Body larger than the route's limit (`details.max_bytes`)",
        403: "Not allowed (e.g. not the sender, not an admin)",
        409: "Conflicts with the conversation's state (direct, member limit, deleted message)",
        415: "Body is not JSON",
        422: "A field is missing, of the wrong type, unknown, or out of range; or it names what "
             "the document cannot know of: a user that does not exist, the caller itself, a cursor "
             "this server did not sign. `details.field` names the field",
        429: "Over a rate limit (sends, edits, groups, member adds: README, \"Security settings for "
             "production\"); Retry-After says when to try again",
        426: "Not a WebSocket handshake: this path only speaks WebSocket (`Upgrade: websocket`)",
        503: "A shard this request needs is unavailable; `details.shard` names it",
    }
    return {str(s): {"description": text[s], "content": _json(ErrorBody)} for s in statuses}


# Text the domain accepts: no NUL or other control characters than tab, CR and LF (and not DEL).
_TEXT_CHAR = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_VISIBLE_CHAR = r"[^\s\x00-\x1f\x7f]"
_NOT_BLANK = f"^{_TEXT_CHAR}*{_VISIBLE_CHAR}{_TEXT_CHAR}*$"
"""Not only whitespace, and no control characters: what `strip()` and the domain's checks keep."""


def _text(max_length: int, description: str, *, blank: bool = False) -> dict[str, Any]:
    return {
        "type": "string", "minLength": 1, "maxLength": max_length,
        "pattern": f"^{_TEXT_CHAR}*$" if blank else _NOT_BLANK, "description": description,
    }


def _name() -> dict[str, Any]:
    # The domain trims names and refuses NUL; control characters are allowed in names.
    return {
        "type": "string", "minLength": NAME_MIN_LENGTH, "maxLength": NAME_MAX_LENGTH,
        "pattern": r"^[^\x00]*[^\s\x00][^\x00]*$", "examples": ["Ada"],
        "description": f"{NAME_MIN_LENGTH} to {NAME_MAX_LENGTH} characters after trimming "
                       "whitespace, not only whitespace, no NUL",
    }


def _refine(components: dict[str, Any]) -> None:
    """Say in the document what the server checks beyond the structs' types, so that every
    request the document allows is one the server accepts: lengths after trimming, text
    without control characters, "at least one field", and which fields go with which type of
    conversation (one schema per type, told apart by `type`)."""
    for name in ("UserCreate", "UserReplace", "UserPatch"):
        for field in ("first_name", "last_name"):
            components[name]["properties"][field] = _name()
    components["UserPatch"]["minProperties"] = 1
    body = _text(BODY_MAX_LENGTH, f"1 to {BODY_MAX_LENGTH} characters, not only whitespace, no "
                                  "control characters but tab and newlines")
    components["MessagePatch"]["properties"]["body"] = body
    create = components["MessageCreate"]["properties"]
    create["body"] = body
    create["client_message_id"] = _text(
        CLIENT_MESSAGE_ID_MAX_LENGTH,
        f"The client's id for this send (1 to {CLIENT_MESSAGE_ID_MAX_LENGTH} characters): a "
        "retry with the same one returns the stored message (200)", blank=True)
    members = components["MembersAdd"]["properties"]["user_ids"]
    members["description"] = f"1 to {MAX_MEMBERS_PER_REQUEST} existing users"
    uuid = {"type": "string", "format": "uuid"}
    components["DirectConversationCreate"] = {
        "title": "DirectConversationCreate", "type": "object",
        "description": "The caller's direct conversation with another existing user",
        "properties": {"type": {"const": "direct"}, "user_id": uuid},
        "required": ["type", "user_id"], "additionalProperties": False,
    }
    components["GroupConversationCreate"] = {
        "title": "GroupConversationCreate", "type": "object",
        "description": f"A group, the caller its admin, with up to {MEMBER_LIMIT - 1} other "
                       f"existing users (at most {MEMBER_LIMIT} members)",
        "properties": {
            "type": {"const": "group"},
            "title": _text(TITLE_MAX_LENGTH, f"1 to {TITLE_MAX_LENGTH} characters after trimming"),
            "member_ids": {"type": "array", "items": uuid, "maxItems": MEMBER_LIMIT},
        },
        "required": ["type", "title"], "additionalProperties": False,
    }
    components["ConversationCreate"] = {
        "title": "ConversationCreate",
        "oneOf": [_ref_named("DirectConversationCreate"), _ref_named("GroupConversationCreate")],
        "discriminator": {"propertyName": "type", "mapping": {
            "direct": _REF.format(name="DirectConversationCreate"),
            "group": _REF.format(name="GroupConversationCreate"),
        }},
    }


def _ref_named(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _limit(maximum: int, default: int) -> dict[str, Any]:
    return {
        "name": "limit", "in": "query", "required": False, "allowEmptyValue": True,
        "description": f"1-{maximum}, default {default} (also when empty)",
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


def _cursor() -> dict[str, Any]:
    return {
        "name": "cursor", "in": "query", "required": False, "allowEmptyValue": True,
        "description": "The previous page's next_cursor (opaque, signed by this server; "
                       "empty: the first page)",
        "schema": {"type": "string"},
    }


def _body_limit(struct: type, max_bytes: int) -> dict[str, Any]:
    return {
        "required": True, "content": _json(struct),
        "description": f"JSON, at most {max_bytes} bytes (413 above)",
        "x-max-body-bytes": max_bytes,
    }


def build_openapi(max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> dict[str, Any]:
    """The document for a server whose body limit is `max_body_bytes` (group creation allows
    at least GROUP_BODY_BYTES, so that 1,000 member ids always fit)."""
    _, components = msgspec.json.schema_components(
        [UserCreate, UserReplace, UserPatch, UserOut, UserPage, FollowOut, FollowPageOut, ErrorBody,
         UserByUsernameOut, ClusterSnapshot, *_MESSAGING_SCHEMAS],
        ref_template=_REF,
    )
    _refine(components)
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
        return _body_limit(struct, max_body_bytes)

    # With open user creation a profile-only user changes without a token; a user with an
    # account only with its own (401 without, 403 with another user's).
    maybe_bearer: list[dict[str, list[str]]] = [{}, {"bearer": []}]

    user_ok = {"description": "The user", "content": _json(UserOut)}
    item = {
        "get": {
            "summary": "Get a user", "operationId": "getUser", "parameters": [user_id, token],
            "responses": {"200": user_ok, **_errors(400, 404, 503)},
        },
        "put": {
            "summary": "Replace a user's names", "operationId": "replaceUser",
            "parameters": [user_id], "requestBody": write_body(UserReplace), "security": maybe_bearer,
            "responses": {"200": user_ok, **_errors(400, 401, 403, 404, 413, 415, 422, 503)},
        },
        "patch": {
            "summary": "Change some of a user's names", "operationId": "patchUser",
            "parameters": [user_id], "requestBody": write_body(UserPatch), "security": maybe_bearer,
            "responses": {"200": user_ok, **_errors(400, 401, 403, 404, 413, 415, 422, 503)},
        },
        "delete": {
            "summary": "Delete a user", "operationId": "deleteUser", "parameters": [user_id],
            "security": maybe_bearer,
            "responses": {"204": {"description": "Deleted"}, **_errors(400, 401, 403, 404, 503)},
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
                "403": {**_errors(403)["403"], "description": "Open user creation is off here: "
                                                               "register with POST /api/v1/accounts"},
                **_errors(400, 413, 415, 422, 503),
            },
        },
        "get": {
            "summary": "List users in id (creation) order across all shards",
            "operationId": "listUsers",
            "parameters": [
                _limit(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE),
                _cursor(),
                {"name": "order", "in": "query", "required": False, "allowEmptyValue": True,
                 "description": "asc (default, also when empty) or desc; a cursor keeps its order",
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
            "parameters": [user_id, _limit(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE), _cursor()],
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
            "/health": plain("Liveness"),
            "/ready": plain("Readiness: every shard reachable, schema at head (503 if not)"),
            **messaging_paths(max_body_bytes),
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
    """The operator's endpoints behind the ops token (api/auth.py, `require_ops_token`)."""
    refusals = {
        "401": {"description": "No or wrong ops token", "content": _json(ErrorBody)},
        "403": {"description": "No ops token is configured (MESSENGER_OPS_TOKEN): the endpoint is off",
                "content": _json(ErrorBody)},
    }
    return {
        "/api/v1/ops/cluster": {"get": {
            "summary": "Every shard's servers, lag, connections, rows vs ring share, relay backlog",
            "operationId": "getClusterOverview",
            "description": "What the /cluster page shows; readings are at most a second old.",
            "security": [{"ops": []}],
            "responses": {
                "200": {"description": "The snapshot", "content": _json(ClusterSnapshot)},
                **refusals,
            },
        }},
        "/api/v1/shards/stats": {"get": {
            "summary": "Per-shard counts, shares, health, lag, pools",
            "operationId": "getShardStats",
            "security": [{"ops": []}],
            "responses": {"200": {"description": "OK", "content": {"application/json": {}}}, **refusals},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics",
            "operationId": "getMetrics",
            "description": "Prometheus scrapes it with `authorization: {type: Bearer, "
                           "credentials_file: <a file holding the ops token>}`.",
            "security": [{"ops": []}],
            "responses": {"200": {"description": "Prometheus text exposition format",
                                  "content": {"text/plain": {}}}, **refusals},
        }},
    }


_MESSAGING_SCHEMAS = [
    ConversationCreate, ConversationOut, MembersAdd, MessageCreate, MessagePatch, MessageOut,
    MessagePageOut, ReadBody, ReadOut, InboxPageOut,
]
_NOT_MEMBER = (
    "No such conversation, or the caller is not a member of it: the two are not told apart, "
    "so outsiders cannot learn which conversations exist"
)


def messaging_paths(max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> dict[str, Any]:
    """Conversations, messages, the inbox and the WebSocket. All need `Authorization: Bearer`."""
    security: list[dict[str, list[str]]] = [{"bearer": []}]

    def op(summary: str, *, body: type | None = None, ok: tuple[str, str, type | None] = ("200", "OK", None),
           params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = (400, 404, 503),
           also: tuple[str, str] | None = None, body_bytes: int = max_body_bytes) -> dict[str, Any]:
        status, description, schema = ok
        response: dict[str, Any] = {"description": description}
        if schema is not None:
            response["content"] = _json(schema)
        responses = {status: response}
        if also is not None:  # a second success status with the same body
            responses[also[0]] = {**response, "description": also[1]}
        responses["401"] = {"description": "No or bad access token", "content": _json(ErrorBody)}
        for code in errors:
            text = _NOT_MEMBER if code == 404 else None
            entry = _errors(code)[str(code)]
            responses[str(code)] = {**entry, "description": text or entry["description"]}
        operation: dict[str, Any] = {"summary": summary, "security": security, "responses": responses,
                                     "parameters": params or []}
        if body is not None:
            operation["requestBody"] = _body_limit(body, body_bytes)
        return operation

    def path(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
                for n in names]

    def query(name: str, description: str, kind: str = "string", **schema: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "allowEmptyValue": True,
                "description": description, "schema": {"type": kind, **schema}}

    def message_id(name: str, description: str) -> dict[str, Any]:
        return query(name, description, format="uuid")

    prefix = "/api/v1/conversations"
    write_errors = (400, 404, 413, 415, 422, 503)
    return {
        prefix: {"post": op(
            "Open a direct conversation (200 if it existed, 201 if created) or create a group (201)",
            body=ConversationCreate, ok=("201", "Created", ConversationOut),
            also=("200", "The direct conversation of the two existed: it is returned"),
            errors=(400, 413, 415, 422, 429, 503), body_bytes=max(max_body_bytes, GROUP_BODY_BYTES))},
        prefix + "/{conversation_id}": {"get": op(
            "A conversation with its members and their read markers", params=path("conversation_id"),
            ok=("200", "The conversation", ConversationOut))},
        prefix + "/{conversation_id}/members": {"post": op(
            "Add members (group admins; 409 for direct conversations or past the member limit)",
            body=MembersAdd, params=path("conversation_id"), ok=("200", "The conversation", ConversationOut),
            errors=(*write_errors, 403, 409, 429))},
        prefix + "/{conversation_id}/members/{user_id}": {"delete": op(
            "Leave (your own id) or remove a member (group admins)", params=path("conversation_id", "user_id"),
            ok=("204", "Removed", None), errors=(400, 403, 404, 409, 503))},
        prefix + "/{conversation_id}/messages": {
            "post": op("Send a message; a retry with the same client_message_id returns the stored one (200)",
                       body=MessageCreate, params=path("conversation_id"),
                       ok=("201", "Sent", MessageOut),
                       also=("200", "A retry of a stored send (same client_message_id): the stored message"),
                       errors=(*write_errors, 429)),
            "get": op("A page of messages, newest first (keyset on id)", params=[
                *path("conversation_id"),
                message_id("before", "Only messages older than this message id (empty: none)"),
                message_id("after", "Only messages newer than this id: the page right after it "
                                    "(empty: none; older than `before` when both are given)"),
                _limit(MAX_PAGE_SIZE, MESSAGES_PAGE_SIZE)],
                ok=("200", "A page", MessagePageOut), errors=(400, 404, 422, 503)),
        },
        prefix + "/{conversation_id}/messages/{message_id}": {
            "patch": op("Edit a message (its sender)", body=MessagePatch, params=path("conversation_id", "message_id"),
                        ok=("200", "The message", MessageOut), errors=(*write_errors, 403, 409, 429)),
            "delete": op("Delete a message (its sender or a group admin): it stays as a tombstone",
                         params=path("conversation_id", "message_id"), ok=("204", "Deleted", None),
                         errors=(400, 403, 404, 429, 503)),
        },
        prefix + "/{conversation_id}/read": {"post": op(
            "Move your read marker forward to a message", body=ReadBody, params=path("conversation_id"),
            ok=("200", "The read marker", ReadOut), errors=write_errors)},
        prefix + "/{conversation_id}/events": {"get": op(
            "The conversation's events after seq `after`, as the WebSocket sends them",
            params=[*path("conversation_id"), query("after", "A seq (default 0, also when empty)", "integer",
                                                    minimum=0, default=0),
                    _limit(EVENTS_MAX_PAGE, EVENTS_DEFAULT_PAGE)], errors=(400, 404, 422, 503))},
        "/api/v1/me/conversations": {"get": op(
            "Your conversations by last activity, with previews and unread counts (your shard only)",
            params=[_cursor(), _limit(MAX_PAGE_SIZE, MESSAGES_PAGE_SIZE)],
            ok=("200", "A page", InboxPageOut), errors=(422, 503))},
        "/api/v1/ws": {"get": {
            "summary": "WebSocket of live events (see README: Live delivery)", "security": security,
            "description": "Only a WebSocket handshake is served here; any other GET with a valid "
                           "token gets 426 (401 without one).",
            "parameters": [query("access_token", "The access token (or Authorization: Bearer)"),
                           query("resume", "1: hold events until the client's resume frame is served")],
            "responses": {
                "101": {"description": "Switching protocols (a WebSocket handshake)"},
                "401": {"description": "No or bad access token", "content": _json(ErrorBody)},
                "426": {**_errors(426)["426"], "headers": {
                    "Upgrade": {"schema": {"type": "string", "const": "websocket"}}}},
            },
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
    documents: dict[int, bytes] = {}  # by body limit: built once, on the first request

    async def openapi(request: Request) -> Response:
        max_body_bytes = context(request).settings.max_body_bytes
        document = documents.get(max_body_bytes)
        if document is None:
            document = documents[max_body_bytes] = msgspec.json.encode(build_openapi(max_body_bytes))
        return Response(document, 200, None, "application/json")

    async def docs(_request: Request) -> Response:
        return HTMLResponse(_DOCS_PAGE, headers={"Content-Security-Policy": DOCS_CSP})

    return [
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/docs", docs, methods=["GET"], name="docs"),
    ]
