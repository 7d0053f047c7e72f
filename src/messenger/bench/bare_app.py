"""The bare-stack yardstick: GET /api/v1/users/{id} with nothing of ours in between.

Raw ASGI on the same granian setup as the API, psycopg 3 pools of the same size and settings
(client-side binding, nothing prepared, autocommit) to the same PgBouncers' replica databases,
and the ring computed inline. No router, freshness markers, breakers, permits, deadlines or
metrics: what a minimal Python service pays for the same read, so `messenger bench` can put
our CPU per request and throughput next to it in the same run (issue 14).

`create_app` is a factory for `granian --factory`; it reads MESSENGER_TOPOLOGY and
MESSENGER_WORKERS like the API, so the pools are sized the same way.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from psycopg import AsyncClientCursor, AsyncConnection
from psycopg_pool import AsyncConnectionPool

from messenger.settings import Settings
from messenger.storage.shards.ring import HashRing
from messenger.storage.users import SELECT_USER

PREFIX = "/api/v1/users/"
JSON = (b"content-type", b"application/json")
NOT_FOUND = b'{"error":{"code":"not_found","message":"no such user"}}'

ASGIApp = Any


class _User(msgspec.Struct):
    id: uuid.UUID
    first_name: str
    last_name: str
    created_at: Any
    updated_at: Any
    following_count: int
    followers_count: int


def create_app() -> ASGIApp:
    settings = Settings.from_env()
    ring = HashRing.for_topology(settings.topology)
    size = settings.pool_min_size or settings.pool_max_size
    pools = {
        s.index: AsyncConnectionPool(
            s.ro_dsn,
            min_size=size,
            max_size=settings.pool_max_size,
            open=False,
            kwargs={
                "autocommit": True,
                "prepare_threshold": None,
                "cursor_factory": AsyncClientCursor,
                "application_name": "messenger-bare",
            },
            connection_class=AsyncConnection,
        )
        for s in settings.topology.shards
    }
    encode = msgspec.json.Encoder().encode

    async def respond(send: Any, status: int, body: bytes) -> None:
        headers = [JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for pool in pools.values():
                    await pool.open(wait=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for pool in pools.values():
                    await pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == "/health":
            await respond(send, 200, b'{"status":"ok"}')
            return
        if not path.startswith(PREFIX):
            await respond(send, 404, NOT_FOUND)
            return
        try:
            user_id = uuid.UUID(path[len(PREFIX):])
        except ValueError:
            await respond(send, 400, b'{"error":{"code":"invalid_id","message":"not a UUID"}}')
            return
        text = str(user_id)
        async with pools[ring.shard_for(text)].connection() as conn:
            cursor = await conn.execute(SELECT_USER, (user_id,))
            row = await cursor.fetchone()
        if row is None:
            await respond(send, 404, NOT_FOUND)
            return
        await respond(send, 200, encode(_User(*row)))

    return app
