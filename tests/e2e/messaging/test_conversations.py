"""Conversations and members over HTTP: direct once, groups, membership rules, 404 for outsiders."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from messenger.domain.conversations import direct_conversation_id
from messenger.services.tokens import TokenSigner
from messenger.storage.shards.ring import HashRing
from tests.e2e.messaging.conftest import ChatServer
from tests.e2e.messaging.support import (
    CONVERSATIONS,
    create_group,
    new_user,
    new_users,
    open_direct,
)


async def test_direct_conversation_is_created_once_then_returned(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a, b = await new_user(http, tokens), await new_user(http, tokens)
    first = await http.post(CONVERSATIONS, json={"type": "direct", "user_id": str(b.id)}, headers=a.headers)
    assert first.status_code == 201, first.text
    again = await http.post(CONVERSATIONS, json={"type": "direct", "user_id": str(a.id)}, headers=b.headers)
    assert again.status_code == 200
    assert again.json()["conversation"]["id"] == first.json()["conversation"]["id"]
    assert first.json()["conversation"]["id"] == str(direct_conversation_id(a.id, b.id))
    assert {m["user_id"] for m in again.json()["members"]} == {str(a.id), str(b.id)}


async def test_both_users_opening_their_direct_conversation_at_once_get_the_same_one(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    for _ in range(5):
        a, b = await new_user(http, tokens), await new_user(http, tokens)
        one, two = await asyncio.gather(
            http.post(CONVERSATIONS, json={"type": "direct", "user_id": str(b.id)}, headers=a.headers),
            http.post(CONVERSATIONS, json={"type": "direct", "user_id": str(a.id)}, headers=b.headers),
        )
        assert sorted([one.status_code, two.status_code]) == [200, 201], (one.text, two.text)
        assert one.json()["conversation"]["id"] == two.json()["conversation"]["id"]
        assert one.json()["conversation"]["member_count"] == 2


async def test_group_with_a_member_on_every_shard_makes_its_creator_admin(
    http: httpx.AsyncClient, tokens: TokenSigner, ring: HashRing
) -> None:
    admin = await new_user(http, tokens)
    others = [await new_user(http, tokens, ring=ring, shard=s) for s in ring.shard_indexes]
    group = await create_group(http, admin, others, title="  Everyone  ")
    assert group["conversation"]["title"] == "Everyone"
    roles = {m["user_id"]: m["role"] for m in group["members"]}
    assert roles == {str(admin.id): "admin", **{str(o.id): "member" for o in others}}
    got = await http.get(f"{CONVERSATIONS}/{group['conversation']['id']}", headers=others[-1].headers)
    assert got.status_code == 200 and got.json() == group


async def test_non_members_get_404_exactly_like_for_a_conversation_that_does_not_exist(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a, b, outsider = await new_users(http, tokens, 3)
    conversation = (await open_direct(http, a, b))["conversation"]["id"]
    missing = str(uuid.uuid4())
    for cid in (conversation, missing):
        for method, path, body in (
            ("GET", "", None),
            ("GET", "/messages", None),
            ("POST", "/messages", {"body": "hi", "client_message_id": "x"}),
            ("POST", "/read", {"message_id": str(uuid.uuid4())}),
            ("GET", "/events", None),
        ):
            response = await http.request(method, f"{CONVERSATIONS}/{cid}{path}", json=body, headers=outsider.headers)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "not_found"
            assert response.json()["error"]["details"] == {"id": cid}


async def test_only_admins_add_members_and_added_members_must_exist(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    admin, member, newcomer = await new_users(http, tokens, 3)
    cid = (await create_group(http, admin, [member]))["conversation"]["id"]
    url = f"{CONVERSATIONS}/{cid}/members"
    refused = await http.post(url, json={"user_ids": [str(newcomer.id)]}, headers=member.headers)
    assert refused.status_code == 403
    ghost = str(uuid.uuid4())
    unknown = await http.post(url, json={"user_ids": [ghost]}, headers=admin.headers)
    assert unknown.status_code == 422 and unknown.json()["error"]["details"]["unknown"] == [ghost]
    added = await http.post(url, json={"user_ids": [str(newcomer.id), str(member.id)]}, headers=admin.headers)
    assert added.status_code == 200
    assert added.json()["conversation"]["member_count"] == 3
    assert (await http.get(f"{CONVERSATIONS}/{cid}", headers=newcomer.headers)).status_code == 200


async def test_members_leave_admins_remove_and_the_last_admin_leaving_promotes_the_oldest_member(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    admin, first, second = await new_users(http, tokens, 3)
    cid = (await create_group(http, admin, [first, second]))["conversation"]["id"]
    members = f"{CONVERSATIONS}/{cid}/members"
    assert (await http.delete(f"{members}/{admin.id}", headers=second.headers)).status_code == 403
    assert (await http.delete(f"{members}/{admin.id}", headers=admin.headers)).status_code == 204
    view = (await http.get(f"{CONVERSATIONS}/{cid}", headers=first.headers)).json()
    assert {m["user_id"]: m["role"] for m in view["members"]} == {str(first.id): "admin", str(second.id): "member"}
    assert (await http.get(f"{CONVERSATIONS}/{cid}", headers=admin.headers)).status_code == 404
    assert (await http.delete(f"{members}/{second.id}", headers=first.headers)).status_code == 204
    assert (await http.delete(f"{members}/{second.id}", headers=first.headers)).status_code == 404


async def test_group_member_limit_is_enforced(chat: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    messaging = chat.runtime.api.messaging
    limit, messaging.member_limit = messaging.member_limit, 3
    try:
        admin, a, b, c = await new_users(http, tokens, 4)
        too_many = await http.post(
            CONVERSATIONS, json={"type": "group", "title": "x", "member_ids": [str(u.id) for u in (a, b, c)]},
            headers=admin.headers,
        )
        assert too_many.status_code == 422 and too_many.json()["error"]["details"]["field"] == "member_ids"
        cid = (await create_group(http, admin, [a, b]))["conversation"]["id"]
        full = await http.post(f"{CONVERSATIONS}/{cid}/members", json={"user_ids": [str(c.id)]}, headers=admin.headers)
        assert full.status_code == 409 and full.json()["error"]["details"]["limit"] == 3
    finally:
        messaging.member_limit = limit


async def test_direct_conversations_refuse_member_changes_and_oneself(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    a, b, c = await new_users(http, tokens, 3)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    add = await http.post(f"{CONVERSATIONS}/{cid}/members", json={"user_ids": [str(c.id)]}, headers=a.headers)
    assert add.status_code == 409
    assert (await http.delete(f"{CONVERSATIONS}/{cid}/members/{a.id}", headers=a.headers)).status_code == 409
    self_chat = await http.post(CONVERSATIONS, json={"type": "direct", "user_id": str(a.id)}, headers=a.headers)
    assert self_chat.status_code == 422


async def test_every_conversation_route_needs_an_access_token(http: httpx.AsyncClient) -> None:
    cid = uuid.uuid4()
    for method, path in (("POST", CONVERSATIONS), ("GET", f"{CONVERSATIONS}/{cid}"),
                         ("GET", f"{CONVERSATIONS}/{cid}/messages"), ("GET", "/api/v1/me/conversations")):
        response = await http.request(method, path)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
