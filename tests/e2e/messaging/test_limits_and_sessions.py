"""Sessions end when they should (logout, password change, deletion), for HTTP and sockets,
and every request that fans out has a limit (README, "Security settings for production")."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from messenger.services.tokens import TokenSigner
from messenger.settings import Settings
from tests.e2e.messaging.conftest import ChatServer, serving
from tests.e2e.messaging.support import (
    CONVERSATIONS,
    Caller,
    LiveClient,
    create_group,
    new_user,
    new_users,
    send,
)

PASSWORD = "s3cret-pass"


async def _account(http: httpx.AsyncClient) -> tuple[Caller, dict[str, Any]]:
    name = f"s{uuid.uuid4().hex[:12]}"
    registered = await http.post("/api/v1/accounts", json={
        "username": name, "email": f"{name}@example.com", "password": PASSWORD, "first_name": "Ses", "last_name": "Sion",
    })
    assert registered.status_code == 201, registered.text
    tokens = await _login(http, name)
    return Caller(uuid.UUID(tokens["user_id"]), tokens["access_token"], "Ses Sion"), tokens


async def _login(http: httpx.AsyncClient, login: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await http.post("/api/v1/auth/login", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _closed_with(connection: Any, timeout: float = 10.0) -> int | None:
    try:
        while True:
            await asyncio.wait_for(connection.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def _clear(settings: Settings, *keys: str) -> None:
    redis = Redis.from_url(settings.topology.redis_url)
    try:
        await redis.delete(*keys)
    finally:
        await redis.aclose()


# -- sessions (issue item 5) -------------------------------------------------------------------


async def test_logout_ends_the_sessions_access_token_and_socket_within_seconds(
    chat: ChatServer, http: httpx.AsyncClient
) -> None:
    me, tokens = await _account(http)
    assert (await http.get("/api/v1/me", headers=me.headers)).status_code == 200
    async with await LiveClient.connect(chat.ws, me) as live:
        started = time.monotonic()
        assert (await http.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})).status_code == 204
        assert await _closed_with(live.connection, 5) == 4401
        closed_after = time.monotonic() - started
    refused = await http.get("/api/v1/me", headers=me.headers)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
    assert closed_after < 3
    async with websockets.connect(f"{chat.ws}/api/v1/ws?access_token={me.token}") as again:
        assert await _closed_with(again) == 4401


async def test_a_password_change_ends_every_session_of_the_user(chat: ChatServer, http: httpx.AsyncClient) -> None:
    me, _ = await _account(http)
    username = (await http.get("/api/v1/me", headers=me.headers)).json()["account"]["username"]
    other = await _login(http, username)
    other_headers = {"Authorization": f"Bearer {other['access_token']}"}
    async with await LiveClient.connect(chat.ws, me) as live:
        changed = await http.post("/api/v1/me/password", headers=other_headers,
                                  json={"current_password": PASSWORD, "new_password": "another-pass"})
        assert changed.status_code == 204
        assert await _closed_with(live.connection, 5) == 4401
    for headers in (me.headers, other_headers):
        assert (await http.get("/api/v1/me", headers=headers)).status_code == 401
    fresh = await _login(http, username, "another-pass")
    assert (await http.get("/api/v1/me", headers={"Authorization": f"Bearer {fresh['access_token']}"})).status_code == 200


async def test_a_deleted_accounts_token_creates_no_group_and_its_sockets_close(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    me, _ = await _account(http)
    friend = await new_user(http, tokens)
    async with await LiveClient.connect(chat.ws, me) as live:
        assert (await http.delete("/api/v1/me", headers=me.headers)).status_code == 204
        assert await _closed_with(live.connection, 5) == 4401
    ghost = await http.post(CONVERSATIONS, headers=me.headers,
                            json={"type": "group", "title": "Ghosts", "member_ids": [str(friend.id)]})
    assert ghost.status_code == 401


async def test_a_deleted_user_creates_no_group_even_when_the_revocation_was_not_seen(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner, settings: Settings
) -> None:
    # The database check behind the revocation: a minted token of a user deleted without one.
    me, friend = await new_user(http, tokens), await new_user(http, tokens)
    assert (await http.delete(f"/api/v1/users/{me.id}")).status_code == 204
    await _clear(settings, f"rv:u:{me.id}")
    chat.runtime.api.sessions._revoked.discard(me.id)
    ghost = await http.post(CONVERSATIONS, headers=me.headers,
                            json={"type": "group", "title": "Ghosts", "member_ids": [str(friend.id)]})
    assert ghost.status_code == 401


# -- abuse limits (issue item 3) ---------------------------------------------------------------


@pytest.fixture
async def strict(chat_settings: Settings) -> Any:
    config = replace(
        chat_settings, registrations_per_client=2, group_rate_per_s=0.01, group_burst=2,
        members_per_request=5, members_added_per_window=4, edit_rate_per_s=0.01, edit_burst=2,
        resume_rate_per_s=0.01, resume_burst=1, sockets_per_user=2, run_background=False,
    )
    await _clear(config, "rl:register-client:127.0.0.1")
    async with serving(config) as server, httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        yield server, client


async def test_registrations_per_client_are_limited(strict: Any) -> None:
    _, http = strict
    answers = []
    for _ in range(3):
        name = f"r{uuid.uuid4().hex[:12]}"
        answers.append((await http.post("/api/v1/accounts", json={
            "username": name, "email": f"{name}@example.com", "password": PASSWORD, "first_name": "A", "last_name": "B",
        })).status_code)
    assert answers == [201, 201, 429]


async def test_group_creation_and_member_adds_are_limited(strict: Any, tokens: TokenSigner) -> None:
    _, http = strict
    admin, *others = await new_users(http, tokens, 7)
    too_many = await http.post(CONVERSATIONS, headers=admin.headers,
                               json={"type": "group", "title": "Big", "member_ids": [str(o.id) for o in others]})
    assert too_many.status_code == 422 and "per request" in too_many.json()["error"]["message"]
    group = await create_group(http, admin, others[:3])  # 3 of the 4 member adds of the window
    added = await http.post(f"{CONVERSATIONS}/{group['conversation']['id']}/members", headers=admin.headers,
                            json={"user_ids": [str(others[3].id), str(others[4].id)]})
    assert added.status_code == 429 and int(added.headers["retry-after"]) >= 1
    await create_group(http, admin, [])
    third = await http.post(CONVERSATIONS, headers=admin.headers, json={"type": "group", "title": "T", "member_ids": []})
    assert third.status_code == 429


async def test_edits_are_limited(strict: Any, tokens: TokenSigner) -> None:
    _, http = strict
    a, b = await new_users(http, tokens, 2)
    group = await create_group(http, a, [b])
    cid = group["conversation"]["id"]
    message = await send(http, a, cid, "first")
    codes = [(await http.patch(f"{CONVERSATIONS}/{cid}/messages/{message['id']}", headers=a.headers,
                               json={"body": f"edit {i}"})).status_code for i in range(3)]
    assert codes == [200, 200, 429]


async def test_sockets_per_user_are_limited(strict: Any, tokens: TokenSigner) -> None:
    server, http = strict
    a = await new_user(http, tokens)
    async with (
        await LiveClient.connect(server.ws, a),
        await LiveClient.connect(server.ws, a),
        websockets.connect(f"{server.ws}/api/v1/ws?access_token={a.token}") as third,
    ):
        assert await _closed_with(third) == 1008
    # Closed sockets give their slots back.
    async with await LiveClient.connect(server.ws, a):
        pass


async def test_resumes_are_limited(strict: Any, tokens: TokenSigner) -> None:
    server, http = strict
    a = await new_user(http, tokens)
    async with await LiveClient.connect(server.ws, a) as live:
        await live.send({"type": "resume", "conversations": {}})
        await live.expect("resumed")
        await live.send({"type": "resume", "conversations": {}})
        refused = await live.expect("error")
        assert refused["code"] == "rate_limited"


async def test_a_frame_is_measured_in_bytes(chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    # 6,000 characters of 3 bytes each: under the 16 KiB limit in characters, over it in bytes.
    a = await new_user(http, tokens)
    async with await LiveClient.connect(chat.ws, a) as live:
        await live.connection.send('{"type":"ping","x":"' + "€" * 6000 + '"}')
        assert await _closed_with(live.connection) == 1009
