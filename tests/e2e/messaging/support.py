"""Helpers for messaging tests: users with tokens, conversations, and a WebSocket client."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from messenger.services.tokens import TokenSigner
from messenger.storage.shards.ring import HashRing

CONVERSATIONS = "/api/v1/conversations"
INBOX = "/api/v1/me/conversations"


@dataclass(frozen=True)
class Caller:
    id: uuid.UUID
    token: str
    name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def new_user(
    http: httpx.AsyncClient, tokens: TokenSigner, *, ring: HashRing | None = None, shard: int | None = None,
    first_name: str = "Ada",
) -> Caller:
    """A user (profile only: open users are on in tests) with an access token; on `shard` if given."""
    last_name = uuid.uuid4().hex[:10]
    while True:
        response = await http.post("/api/v1/users", json={"first_name": first_name, "last_name": last_name})
        assert response.status_code == 201, response.text
        user_id = uuid.UUID(response.json()["id"])
        if shard is None or (ring is not None and ring.shard_for(str(user_id)) == shard):
            return Caller(user_id, tokens.issue_access(user_id, uuid.uuid4()), f"{first_name} {last_name}")
        last_name = uuid.uuid4().hex[:10]


async def new_users(http: httpx.AsyncClient, tokens: TokenSigner, count: int) -> list[Caller]:
    return [await new_user(http, tokens) for _ in range(count)]


async def open_direct(http: httpx.AsyncClient, a: Caller, b: Caller) -> dict[str, Any]:
    response = await http.post(CONVERSATIONS, json={"type": "direct", "user_id": str(b.id)}, headers=a.headers)
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


async def create_group(http: httpx.AsyncClient, admin: Caller, members: list[Caller], title: str = "Team") -> dict[str, Any]:
    response = await http.post(
        CONVERSATIONS,
        json={"type": "group", "title": title, "member_ids": [str(m.id) for m in members]},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def send(
    http: httpx.AsyncClient, caller: Caller, conversation_id: str, body: str, client_message_id: str | None = None
) -> dict[str, Any]:
    """Send as a client does: a 429 is waited out for as long as it says, then sent again."""
    payload = {"body": body, "client_message_id": client_message_id or uuid.uuid4().hex}
    for _ in range(20):
        response = await http.post(
            f"{CONVERSATIONS}/{conversation_id}/messages", json=payload, headers=caller.headers
        )
        if response.status_code != 429:
            break
        await asyncio.sleep(float(response.json()["error"]["details"]["retry_after"]))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def inbox(http: httpx.AsyncClient, caller: Caller, **params: Any) -> dict[str, Any]:
    response = await http.get(INBOX, params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


class LiveClient:
    """A WebSocket client that reads JSON frames, skipping the server's heartbeat pings."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ready: dict[str, Any] = {}

    @classmethod
    async def connect(cls, ws_base: str, caller: Caller, *, resume: bool = False, **kwargs: Any) -> LiveClient:
        query = f"?access_token={caller.token}" + ("&resume=1" if resume else "")
        connection = await websockets.connect(f"{ws_base}/api/v1/ws{query}", **kwargs)
        client = cls(connection)
        client.ready = await client.next()
        assert client.ready["type"] == "ready", client.ready
        return client

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            frame = json.loads(await asyncio.wait_for(self.connection.recv(), timeout))
            if frame["type"] != "ping":
                return frame  # type: ignore[no-any-return]

    async def expect(self, type_: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Read until a frame of `type_` whose top-level fields match; others are skipped."""
        end = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.01, end - time.monotonic()))
            if frame["type"] == type_ and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(frame))

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> LiveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
