"""Messages over HTTP: sends (idempotent), edits, tombstones, pages, read markers, the limit."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest

from messenger.services.tokens import TokenSigner
from messenger.settings import Settings
from messenger.storage.shards.ring import HashRing
from messenger.topology import Topology
from tests.e2e.messaging.conftest import serving
from tests.e2e.messaging.support import (
    CONVERSATIONS,
    create_group,
    new_user,
    new_users,
    open_direct,
    send,
)


def stored_messages(topology: Topology, ring: HashRing, conversation_id: str) -> list[tuple[Any, ...]]:
    """The conversation's messages as its shard's primary has them."""
    shard = topology.shard(ring.shard_for(conversation_id))
    with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT id, body, client_message_id FROM messages WHERE conversation_id = %s ORDER BY id",
            (conversation_id,),
        ).fetchall()


async def test_two_users_on_different_shards_chat_and_read_each_others_messages(
    http: httpx.AsyncClient, tokens: TokenSigner, ring: HashRing
) -> None:
    a = await new_user(http, tokens, ring=ring, shard=0, first_name="Ann")
    b = await new_user(http, tokens, ring=ring, shard=1, first_name="Bob")
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    hello = await send(http, a, cid, "hello Bob")
    reply = await send(http, b, cid, "hi Ann ✋")
    assert hello["sender_id"] == str(a.id) and hello["sender_name"] == a.name
    assert (hello["number"], reply["number"]) == (1, 2) and reply["seq"] == hello["seq"] + 1
    assert uuid.UUID(reply["id"]) > uuid.UUID(hello["id"])
    for reader in (a, b):
        page = (await http.get(f"{CONVERSATIONS}/{cid}/messages", headers=reader.headers)).json()
        assert [m["body"] for m in page["items"]] == ["hi Ann ✋", "hello Bob"]
        assert page["has_more"] is False


async def test_a_retried_send_returns_the_original_message_and_stores_one(
    http: httpx.AsyncClient, tokens: TokenSigner, topology: Topology, ring: HashRing
) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    body = {"body": "once", "client_message_id": "c-1"}
    url = f"{CONVERSATIONS}/{cid}/messages"
    first = await http.post(url, json=body, headers=a.headers)
    retry = await http.post(url, json={**body, "body": "changed on retry"}, headers=a.headers)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    # The same client id from the other member is another message.
    assert (await http.post(url, json=body, headers=b.headers)).status_code == 201
    assert [r[2] for r in stored_messages(topology, ring, cid)] == ["c-1", "c-1"]


async def test_concurrent_retries_of_one_send_store_one_message(
    http: httpx.AsyncClient, tokens: TokenSigner, topology: Topology, ring: HashRing
) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    body = {"body": "racing", "client_message_id": "same"}
    responses = await asyncio.gather(
        *(http.post(f"{CONVERSATIONS}/{cid}/messages", json=body, headers=a.headers) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(stored_messages(topology, ring, cid)) == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"body": "", "client_message_id": "x"}, "body"),
        ({"body": "   \n ", "client_message_id": "x"}, "body"),
        ({"body": "x" * 4001, "client_message_id": "x"}, "body"),
        ({"body": "nul \x00 inside", "client_message_id": "x"}, "body"),
        ({"body": "bell \x07", "client_message_id": "x"}, "body"),
        ({"body": "ok", "client_message_id": ""}, "client_message_id"),
        ({"body": "ok", "client_message_id": "y" * 101}, "client_message_id"),
        ({"body": "ok"}, "client_message_id"),
        ({"body": 5, "client_message_id": "x"}, "body"),
        ({"body": "ok", "client_message_id": "x", "extra": 1}, "extra"),
    ],
)
async def test_invalid_message_is_a_422_naming_the_field_and_writes_nothing(
    http: httpx.AsyncClient, tokens: TokenSigner, topology: Topology, ring: HashRing,
    body: dict[str, Any], field: str,
) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    response = await http.post(f"{CONVERSATIONS}/{cid}/messages", json=body, headers=a.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["details"]["field"] == field
    assert stored_messages(topology, ring, cid) == []


async def test_a_body_of_exactly_4000_characters_is_accepted(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    assert len((await send(http, a, cid, "é" * 4000))["body"]) == 4000


async def test_malformed_ids_and_json_get_the_error_shape(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    bad_path = await http.get(f"{CONVERSATIONS}/not-a-uuid/messages", headers=a.headers)
    assert bad_path.status_code == 400 and bad_path.json()["error"]["code"] == "invalid_id"
    bad_json = await http.post(
        f"{CONVERSATIONS}/{cid}/messages", content=b"{nope", headers={**a.headers, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "malformed_json"
    bad_cursor = await http.get(f"{CONVERSATIONS}/{cid}/messages?before=xyz", headers=a.headers)
    assert bad_cursor.status_code == 422 and bad_cursor.json()["error"]["details"]["field"] == "before"
    bad_limit = await http.get(f"{CONVERSATIONS}/{cid}/messages?limit=0", headers=a.headers)
    assert bad_limit.status_code == 422 and bad_limit.json()["error"]["details"]["field"] == "limit"


async def test_only_the_sender_edits_and_sender_or_group_admin_deletes(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    admin, alice, bob = await new_users(http, tokens, 3)
    cid = (await create_group(http, admin, [alice, bob]))["conversation"]["id"]
    first = await send(http, alice, cid, "tpyo")
    second = await send(http, alice, cid, "second")
    url = f"{CONVERSATIONS}/{cid}/messages"
    assert (await http.patch(f"{url}/{first['id']}", json={"body": "x"}, headers=bob.headers)).status_code == 403
    edited = await http.patch(f"{url}/{first['id']}", json={"body": "typo"}, headers=alice.headers)
    assert edited.status_code == 200
    assert edited.json()["body"] == "typo" and edited.json()["edited_at"] is not None
    assert edited.json()["seq"] == first["seq"]  # the seq of its creation stays
    assert (await http.delete(f"{url}/{first['id']}", headers=bob.headers)).status_code == 403
    assert (await http.delete(f"{url}/{first['id']}", headers=alice.headers)).status_code == 204
    assert (await http.delete(f"{url}/{second['id']}", headers=admin.headers)).status_code == 204
    assert (await http.delete(f"{url}/{second['id']}", headers=admin.headers)).status_code == 204  # again
    gone = await http.patch(f"{url}/{first['id']}", json={"body": "back"}, headers=alice.headers)
    assert gone.status_code == 409
    page = (await http.get(url, headers=bob.headers)).json()["items"]
    assert [(m["body"], m["deleted_at"] is not None) for m in page] == [(None, True), (None, True)]
    missing = await http.delete(f"{url}/{uuid.uuid4()}", headers=alice.headers)
    assert missing.status_code == 404


async def test_pages_walk_back_and_forth_by_id_newest_first(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    sent = [(await send(http, a if i % 2 else b, cid, f"m{i}"))["id"] for i in range(7)]
    url = f"{CONVERSATIONS}/{cid}/messages"
    newest = (await http.get(url, params={"limit": 3}, headers=a.headers)).json()
    assert [m["id"] for m in newest["items"]] == sent[:-4:-1] and newest["has_more"]
    older = (await http.get(url, params={"limit": 3, "before": newest["items"][-1]["id"]}, headers=a.headers)).json()
    assert [m["id"] for m in older["items"]] == sent[3:0:-1] and older["has_more"]
    oldest = (await http.get(url, params={"limit": 3, "before": older["items"][-1]["id"]}, headers=a.headers)).json()
    assert [m["id"] for m in oldest["items"]] == [sent[0]] and not oldest["has_more"]
    forward = (await http.get(url, params={"limit": 2, "after": sent[1]}, headers=a.headers)).json()
    assert [m["id"] for m in forward["items"]] == [sent[3], sent[2]] and forward["has_more"]
    between = (await http.get(url, params={"after": sent[1], "before": sent[5]}, headers=a.headers)).json()
    assert [m["id"] for m in between["items"]] == [sent[4], sent[3], sent[2]] and not between["has_more"]


async def test_paging_while_messages_arrive_never_repeats_or_skips_one(
    http: httpx.AsyncClient, tokens: TokenSigner, ring: HashRing
) -> None:
    senders = [await new_user(http, tokens, ring=ring, shard=s) for s in ring.shard_indexes]
    reader = senders[0]
    cid = (await create_group(http, reader, senders[1:]))["conversation"]["id"]
    before = [(await send(http, senders[i % len(senders)], cid, f"old {i}"))["id"] for i in range(25)]
    url = f"{CONVERSATIONS}/{cid}/messages"
    start = (await http.get(url, params={"limit": 1}, headers=reader.headers)).json()["items"][0]["id"]
    stop = asyncio.Event()

    async def keep_sending(sender: Any) -> list[str]:
        ids = []
        while not stop.is_set():
            ids.append((await send(http, sender, cid, "new"))["id"])
        return ids

    writers = [asyncio.create_task(keep_sending(s)) for s in senders]
    try:
        # Backwards from the newest message at the start: exactly the older ones, once each.
        seen_back: list[str] = [start]
        cursor = start
        while True:
            page = (await http.get(url, params={"limit": 4, "before": cursor}, headers=reader.headers)).json()
            seen_back += [m["id"] for m in page["items"]]
            if not page["has_more"]:
                break
            cursor = page["items"][-1]["id"]
        # Forwards from the oldest while sends go on: every message in commit order, once each.
        seen_forward: list[str] = []
        cursor = before[0]
        for _ in range(15):
            page = (await http.get(url, params={"limit": 3, "after": cursor}, headers=reader.headers)).json()
            ids = [m["id"] for m in reversed(page["items"])]
            seen_forward += ids
            if ids:
                cursor = ids[-1]
    finally:
        stop.set()
        sent_during = [i for ids in await asyncio.gather(*writers) for i in ids]
    assert seen_back == before[::-1]
    assert len(seen_forward) == len(set(seen_forward))
    everything = [m["id"] for m in await _all_messages(http, reader, cid)]
    assert seen_forward == everything[1:1 + len(seen_forward)]  # a prefix, in order: no skip
    assert set(sent_during) <= set(everything)


async def _all_messages(http: httpx.AsyncClient, caller: Any, cid: str) -> list[dict[str, Any]]:
    """Oldest first."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = (await http.get(f"{CONVERSATIONS}/{cid}/messages", params=params, headers=caller.headers)).json()
        out += page["items"]
        if not page["has_more"]:
            return out[::-1]
        params["before"] = page["items"][-1]["id"]


async def test_read_marker_only_moves_forward(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    first, second = await send(http, a, cid, "1"), await send(http, a, cid, "2")
    url = f"{CONVERSATIONS}/{cid}/read"
    assert (await http.post(url, json={"message_id": second["id"]}, headers=b.headers)).json() == {
        "read_message_id": second["id"]}
    assert (await http.post(url, json={"message_id": first["id"]}, headers=b.headers)).json() == {
        "read_message_id": second["id"]}
    unknown = await http.post(url, json={"message_id": str(uuid.uuid4())}, headers=b.headers)
    assert unknown.status_code == 404
    members = (await http.get(f"{CONVERSATIONS}/{cid}", headers=a.headers)).json()["members"]
    assert {m["user_id"]: m["read_message_id"] for m in members} == {str(a.id): second["id"], str(b.id): second["id"]}


async def test_the_event_log_lists_every_change_in_seq_order(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await create_group(http, a, [b]))["conversation"]["id"]
    message = await send(http, b, cid, "hello")
    await http.patch(f"{CONVERSATIONS}/{cid}/messages/{message['id']}", json={"body": "hello!"}, headers=b.headers)
    await http.delete(f"{CONVERSATIONS}/{cid}/members/{b.id}", headers=b.headers)
    events = (await http.get(f"{CONVERSATIONS}/{cid}/events", headers=a.headers)).json()["items"]
    assert [(e["type"], e["seq"]) for e in events] == [
        ("conversation.created", 1), ("message.created", 2), ("message.edited", 3), ("member.removed", 4)]
    later = (await http.get(f"{CONVERSATIONS}/{cid}/events", params={"after": 2}, headers=a.headers)).json()
    assert [e["seq"] for e in later["items"]] == [3, 4]


async def test_the_event_log_serves_a_message_as_it_is_now_not_its_edited_away_or_deleted_text(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a, b, later = await new_users(http, tokens, 3)
    cid = (await create_group(http, a, [b]))["conversation"]["id"]
    url = f"{CONVERSATIONS}/{cid}/messages"
    kept = await send(http, b, cid, "still here")
    edited = await send(http, b, cid, "my password is hunter2")
    assert (await http.patch(f"{url}/{edited['id']}", json={"body": "oops"}, headers=b.headers)).status_code == 200
    deleted = await send(http, b, cid, "secret plans")
    await http.patch(f"{url}/{deleted['id']}", json={"body": "secret plans v2"}, headers=b.headers)
    assert (await http.delete(f"{url}/{deleted['id']}", headers=b.headers)).status_code == 204
    # A member added afterwards replays the log from the start, like every member.
    added = await http.post(f"{CONVERSATIONS}/{cid}/members", json={"user_ids": [str(later.id)]}, headers=a.headers)
    assert added.status_code in (200, 201), added.text
    for reader in (a, later):
        events = (await http.get(f"{CONVERSATIONS}/{cid}/events", headers=reader.headers)).json()["items"]
        text = str(events)
        assert "hunter2" not in text and "secret plans" not in text
        bodies = {e["message"]["id"]: e["message"]["body"] for e in events if "message" in e}
        assert bodies == {kept["id"]: "still here", edited["id"]: "oops", deleted["id"]: None}
        types = [e["type"] for e in events if e.get("message", {}).get("id") == deleted["id"]]
        assert types == ["message.created", "message.edited", "message.deleted"]  # the history stays


async def test_sending_too_fast_is_a_429_with_retry_after_and_writes_nothing(
    settings: Settings, tokens: TokenSigner, topology: Topology, ring: HashRing
) -> None:
    async with serving(replace(settings, send_rate_per_s=0.2, send_burst=3)) as server, httpx.AsyncClient(
        base_url=server.base
    ) as client:
        a, b = await new_users(client, tokens, 2)
        cid = (await open_direct(client, a, b))["conversation"]["id"]
        for i in range(3):
            await send(client, a, cid, f"burst {i}")
        limited = await client.post(
            f"{CONVERSATIONS}/{cid}/messages", json={"body": "one too many", "client_message_id": "x"},
            headers=a.headers,
        )
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await client.post(
            f"{CONVERSATIONS}/{cid}/messages", json={"body": "b may", "client_message_id": "y"}, headers=b.headers,
        )).status_code == 201  # per user
    assert [r[1] for r in stored_messages(topology, ring, cid)] == ["burst 0", "burst 1", "burst 2", "b may"]
