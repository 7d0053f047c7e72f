"""Live delivery over real WebSockets: events, typing, ordering, resume, and every way a socket
is refused or closed."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from messenger.services.tokens import TokenSigner
from messenger.settings import Settings
from messenger.storage.redis.live_bus import channel
from messenger.storage.shards.ring import HashRing
from tests.e2e.messaging.conftest import ChatServer, serving
from tests.e2e.messaging.support import (
    CONVERSATIONS,
    LiveClient,
    create_group,
    new_user,
    new_users,
    open_direct,
    send,
)
from tests.support.waiting import wait_for_async as wait_until


async def _closed_with(connection: Any, timeout: float = 10.0) -> int | None:
    """Read until the server closes; its close code."""
    try:
        while True:
            await asyncio.wait_for(connection.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def test_two_users_on_different_shards_chat_live(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner, ring: HashRing
) -> None:
    a = await new_user(http, tokens, ring=ring, shard=0)
    b = await new_user(http, tokens, ring=ring, shard=2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    async with await LiveClient.connect(chat.ws, a) as live_a, await LiveClient.connect(chat.ws, b) as live_b:
        assert live_a.ready["user_id"] == str(a.id)
        sent = await send(http, a, cid, "live hello")
        for client in (live_a, live_b):  # the sender's other devices see it too
            event = await client.expect("message.created", conversation_id=cid)
            assert event["message"] == sent and event["seq"] == sent["seq"]
        await live_b.send({"type": "typing", "conversation_id": cid})
        typing = await live_a.expect("typing")
        assert typing == {"type": "typing", "conversation_id": cid, "user_id": str(b.id)}
        await http.post(f"{CONVERSATIONS}/{cid}/read", json={"message_id": sent["id"]}, headers=b.headers)
        read = await live_a.expect("read")
        assert read == {"type": "read", "conversation_id": cid, "user_id": str(b.id), "message_id": sent["id"]}
        edited = await http.patch(f"{CONVERSATIONS}/{cid}/messages/{sent['id']}", json={"body": "edited"}, headers=a.headers)
        event = await live_b.expect("message.edited")
        assert event["message"] == edited.json() and event["seq"] == sent["seq"] + 1
        await http.delete(f"{CONVERSATIONS}/{cid}/messages/{sent['id']}", headers=a.headers)
        deleted = await live_b.expect("message.deleted")
        assert deleted["message"]["body"] is None and deleted["seq"] == sent["seq"] + 2
        # b never saw its own typing indicator: the next thing it gets after the read is the edit.


async def test_a_group_with_members_on_every_shard_reaches_every_member_live(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner, ring: HashRing
) -> None:
    members = [await new_user(http, tokens, ring=ring, shard=s) for s in ring.shard_indexes]
    newcomer = await new_user(http, tokens)
    clients = [await LiveClient.connect(chat.ws, m) for m in [*members, newcomer]]
    try:
        group = await create_group(http, members[0], members[1:])
        cid = group["conversation"]["id"]
        for client in clients[:-1]:
            created = await client.expect("conversation.created", conversation_id=cid)
            assert created["seq"] == 1 and len(created["members"]) == len(members)
        await http.post(f"{CONVERSATIONS}/{cid}/members", json={"user_ids": [str(newcomer.id)]}, headers=members[0].headers)
        for client in clients:
            added = await client.expect("member.added", conversation_id=cid)
            assert [m["user_id"] for m in added["members"]] == [str(newcomer.id)]
        sent = await send(http, members[-1], cid, "to all")
        for client in clients:
            assert (await client.expect("message.created", conversation_id=cid))["message"]["id"] == sent["id"]
    finally:
        for client in clients:
            await client.close()


async def test_typing_is_not_stored_and_outsiders_get_an_error_frame(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a, b, outsider = await new_users(http, tokens, 3)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    async with await LiveClient.connect(chat.ws, outsider) as live:
        await live.send({"type": "typing", "conversation_id": cid})
        error = await live.expect("error")
        assert error["code"] == "not_found" and error["details"] == {"conversation_id": cid}
    events = (await http.get(f"{CONVERSATIONS}/{cid}/events", headers=a.headers)).json()["items"]
    assert [e["type"] for e in events] == ["conversation.created"]


async def test_a_reconnecting_client_resumes_with_exactly_the_missed_events_in_order(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    async with await LiveClient.connect(chat.ws, b) as live:
        await send(http, a, cid, "seen")
        last_seen = (await live.expect("message.created"))["seq"]
    missed = [await send(http, a, cid, f"missed {i}") for i in range(3)]
    await http.patch(f"{CONVERSATIONS}/{cid}/messages/{missed[0]['id']}", json={"body": "edited"}, headers=a.headers)
    async with await LiveClient.connect(chat.ws, b, resume=True) as live:
        assert live.ready["awaiting_resume"] is True
        # Sent after connecting but before resuming: held back, delivered after the replay.
        during = await send(http, a, cid, "during")
        await live.send({"type": "resume", "conversations": {cid: last_seen}})
        frames = [await live.next() for _ in range(6)]
        assert [(f["type"], f.get("seq")) for f in frames] == [
            ("message.created", last_seen + 1), ("message.created", last_seen + 2),
            ("message.created", last_seen + 3), ("message.edited", last_seen + 4),
            ("message.created", last_seen + 5), ("resumed", None),
        ]
        assert frames[4]["message"]["id"] == during["id"]
        assert frames[5]["conversations"] == {cid: last_seen + 5} and frames[5]["refused"] == []
        after = await send(http, a, cid, "after")
        assert (await live.next())["message"]["id"] == after["id"]


async def test_resume_refuses_conversations_the_user_is_not_in(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a, b, outsider = await new_users(http, tokens, 3)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    async with await LiveClient.connect(chat.ws, outsider) as live:
        await live.send({"type": "resume", "conversations": {cid: 0}})
        report = await live.expect("resumed")
        assert report == {"type": "resumed", "conversations": {}, "refused": [cid]}


async def test_an_event_lost_between_workers_is_filled_from_the_log_in_order(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    hub = chat.runtime.hub
    async with await LiveClient.connect(chat.ws, b) as live:
        first = await send(http, a, cid, "one")
        assert (await live.expect("message.created"))["seq"] == first["seq"]
        publish = hub.bus.publish

        async def drop(user_ids: Any, frame: bytes) -> None:
            return None

        monkeypatch.setattr(hub.bus, "publish", drop)
        lost = await send(http, a, cid, "lost on the bus")
        monkeypatch.setattr(hub.bus, "publish", publish)
        third = await send(http, a, cid, "three")
        got = [await live.next(), await live.next()]
        assert [(f["seq"], f["message"]["id"]) for f in got] == [
            (lost["seq"], lost["id"]), (third["seq"], third["id"])]


@pytest.mark.parametrize("query", ["", "?access_token=nonsense", "?access_token=expired"])
async def test_a_socket_without_a_valid_token_is_closed_with_4401(
    chat: ChatServer, settings: Settings, query: str
) -> None:
    if query.endswith("expired"):
        query = "?access_token=" + TokenSigner(settings.token_keys).issue_access(uuid.uuid4(), uuid.uuid4(), now=1_000_000)
    async with websockets.connect(f"{chat.ws}/api/v1/ws{query}") as connection:
        assert await _closed_with(connection) == 4401


async def test_the_bearer_header_authenticates_too(chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a = await new_user(http, tokens)
    async with websockets.connect(f"{chat.ws}/api/v1/ws", additional_headers=a.headers) as connection:
        assert json.loads(await connection.recv())["type"] == "ready"


async def test_bad_frames_get_an_error_frame_and_the_socket_stays_open(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a = await new_user(http, tokens)
    async with await LiveClient.connect(chat.ws, a) as live:
        for bad in ("not json", '{"type": "shout"}', '{"type": "typing"}', '{"type": "resume", "conversations": {"x": 1}}'):
            await live.connection.send(bad)
            assert (await live.expect("error"))["code"] == "invalid_frame"
        await live.send({"type": "ping"})
        assert await live.next() == {"type": "pong"}


async def test_a_frame_over_the_size_limit_closes_the_socket_with_1009(
    chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a = await new_user(http, tokens)
    async with await LiveClient.connect(chat.ws, a) as live:
        await live.connection.send(json.dumps({"type": "ping", "pad": "x" * 20_000}))
        assert await _closed_with(live.connection) == 1009


async def test_a_silent_client_is_pinged_then_closed_with_4408(
    chat_settings: Settings, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a = await new_user(http, tokens)
    async with serving(replace(chat_settings, ws_heartbeat_s=0.3, run_background=False)) as server:
        async with websockets.connect(f"{server.ws}/api/v1/ws?access_token={a.token}") as connection:
            frames = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(connection.recv(), 10)))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
            assert {"type": "ping"} in frames
        # A client that answers stays connected through many heartbeats.
        async with websockets.connect(f"{server.ws}/api/v1/ws?access_token={a.token}") as connection:
            for _ in range(8):
                frame = json.loads(await asyncio.wait_for(connection.recv(), 10))
                if frame["type"] == "ping":
                    await connection.send('{"type": "pong"}')


async def test_a_client_that_does_not_read_is_disconnected_and_memory_stays_bounded(
    chat_settings: Settings, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a = await new_user(http, tokens)
    async with serving(replace(chat_settings, ws_queue_limit=8, run_background=False)) as server:
        # A tiny receive buffer and no reading: the server's writes back up.
        connection = await websockets.connect(
            f"{server.ws}/api/v1/ws?access_token={a.token}", max_queue=1, max_size=2**24,
        )
        hub = server.runtime.hub
        await wait_until(_async(lambda: hub.sessions_of(a.id) == 1), 10, "the session")
        redis = Redis.from_url(server.runtime.settings.topology.redis_url)
        try:
            big = json.dumps({"type": "noise", "pad": "x" * 200_000}).encode()
            for _ in range(200):
                await redis.publish(channel(a.id), big)
                if hub.sessions_of(a.id) == 0:
                    break
            await wait_until(_async(lambda: hub.sessions_of(a.id) == 0), 20, "the slow socket to be dropped")
        finally:
            await redis.aclose()
            await connection.close()


async def test_an_expired_token_closes_the_socket_unless_the_client_sends_a_fresh_one(
    chat: ChatServer, http: httpx.AsyncClient, settings: Settings
) -> None:
    short = TokenSigner(settings.token_keys, access_ttl_s=2)
    a = await new_user(http, short)
    async with await LiveClient.connect(chat.ws, a) as live:
        await live.send({"type": "auth", "access_token": TokenSigner(settings.token_keys).issue_access(a.id, uuid.uuid4())})
        assert (await live.expect("authenticated"))["expires_at"] > 0
        await asyncio.sleep(2.5)  # past the first token's expiry: still open
        await live.send({"type": "ping"})
        assert (await live.expect("pong")) == {"type": "pong"}
    b = await new_user(http, short)
    async with await LiveClient.connect(chat.ws, b) as live:
        assert await _closed_with(live.connection) == 4401


async def test_losing_the_redis_subscription_closes_sockets_with_1012_for_them_to_resume(
    chat_settings: Settings, http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a = await new_user(http, tokens)
    async with serving(replace(chat_settings, run_background=False)) as server:
        live = await LiveClient.connect(server.ws, a)
        redis = Redis.from_url(server.runtime.settings.topology.redis_url)
        try:
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert await _closed_with(live.connection) == 1012
        finally:
            await redis.aclose()
        async with await LiveClient.connect(server.ws, a) as again:  # and serves again at once
            assert again.ready["type"] == "ready"


def _async(check: Any) -> Any:
    async def run() -> Any:
        return check()

    return run
