"""An in-memory stand-in for the users API, for testing the harness without any database.

Same routes, statuses and bodies as the real API (`create_app` is a factory for
`granian --factory`); state lives in the worker process, so serve it with one worker. It is the
harness's test double, and `messenger bench --server fake` measures the generator and the
HTTP stack with every response validated but no database behind them.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import msgspec

from messenger.bench.empty_app import serve_lifespan
from messenger.domain.ids import new_id

PREFIX = "/api/v1/users"
JSON = [(b"content-type", b"application/json")]

ASGIApp = Any


def create_app() -> ASGIApp:
    users: dict[str, dict[str, str]] = {}
    order: list[str] = []
    encode = msgspec.json.encode
    decode = msgspec.json.decode

    async def respond(send: Any, status: int, body: Any = None) -> None:
        payload = b"" if body is None else encode(body)
        headers = [*JSON, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def read_body(receive: Any) -> Any:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            return decode(b"".join(chunks))
        except msgspec.DecodeError:
            return None

    def error(code: str, message: str) -> dict[str, Any]:
        return {"error": {"code": code, "message": message}}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        if path == "/health":
            return await respond(send, 200, {"status": "ok"})
        if path == PREFIX and method == "POST":
            body = await read_body(receive)
            if not isinstance(body, dict) or not all(
                isinstance(body.get(k), str) for k in ("first_name", "last_name")
            ):
                return await respond(send, 422, error("invalid_input", "names required"))
            now = datetime.now(UTC).isoformat()
            uid = str(new_id())
            user = {"id": uid, "first_name": body["first_name"], "last_name": body["last_name"]}
            user |= {"created_at": now, "updated_at": now}
            users[uid] = user
            bisect.insort(order, uid)
            return await respond(send, 201, user)
        if path == PREFIX and method == "GET":
            query = parse_qs(scope["query_string"].decode())
            limit = min(100, int(query.get("limit", ["20"])[0]))
            cursor = query.get("cursor", [""])[0]
            start = bisect.bisect_right(order, cursor) if cursor else 0
            items = [users[u] for u in order[start : start + limit]]
            more = start + limit < len(order)
            next_cursor = items[-1]["id"] if items and more else None
            return await respond(send, 200, {"items": items, "next_cursor": next_cursor})
        if path.startswith(PREFIX + "/"):
            uid = path[len(PREFIX) + 1 :]
            stored = users.get(uid)
            if stored is None:
                return await respond(send, 404, error("not_found", f"no user {uid}"))
            if method == "GET":
                return await respond(send, 200, stored)
            if method == "DELETE":
                del users[uid]
                order.pop(bisect.bisect_left(order, uid))
                return await respond(send, 204)
            if method in ("PUT", "PATCH"):
                body = await read_body(receive)
                if not isinstance(body, dict):
                    return await respond(send, 422, error("invalid_input", "object required"))
                for key in ("first_name", "last_name"):
                    if isinstance(body.get(key), str):
                        stored[key] = body[key]
                stored["updated_at"] = datetime.now(UTC).isoformat()
                return await respond(send, 200, stored)
        return await respond(send, 404, error("not_found", "no such route"))

    return app
