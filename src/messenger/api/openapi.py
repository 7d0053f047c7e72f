"""The OpenAPI document, built once from the msgspec structs, and a Swagger UI page."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from messenger.api.relation_schemas import FollowOut, FollowPageOut
from messenger.api.schemas import ErrorBody, UserCreate, UserOut, UserPage, UserPatch, UserReplace
from messenger.domain.users import NAME_MAX_LENGTH, NAME_MIN_LENGTH
from messenger.services.users import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

_REF = "#/components/schemas/{name}"


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
        415: "Body is not JSON",
        422: "A field is missing, of the wrong type, unknown, or out of range",
        503: "A shard this request needs is unavailable; `details.shard` names it",
    }
    return {str(s): {"description": text[s], "content": _json(ErrorBody)} for s in statuses}


def build_openapi() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [UserCreate, UserReplace, UserPatch, UserOut, UserPage, FollowOut, FollowPageOut, ErrorBody],
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

    bearer = [{"bearer": []}]
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
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Messenger API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


def openapi_routes() -> list[Route]:
    document = msgspec.json.encode(build_openapi())

    async def openapi(_request: Request) -> Response:
        return Response(document, 200, None, "application/json")

    async def docs(_request: Request) -> Response:
        return HTMLResponse(_DOCS_PAGE)

    return [
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/docs", docs, methods=["GET"], name="docs"),
    ]
