"""The cases where the API's answer was made to match /openapi.json (issue 16): a plain GET of
the socket's path, the body limit of group creation, empty `limit=` on the listings."""

from __future__ import annotations

import json
import uuid

import httpx

from messenger.api.bodies import GROUP_BODY_BYTES
from messenger.services.tokens import TokenSigner
from tests.e2e.messaging.support import (
    CONVERSATIONS,
    INBOX,
    create_group,
    new_user,
    new_users,
    send,
)
from tests.support.waiting import wait_for_async

WS = "/api/v1/ws"


async def test_plain_get_of_the_socket_path_is_426_upgrade_required(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    caller = await new_user(http, tokens)
    for request in ({"headers": caller.headers}, {"params": {"access_token": caller.token}}):
        response = await http.get(WS, **request)  # type: ignore[arg-type]
        assert response.status_code == 426, response.text
        assert response.headers["upgrade"] == "websocket"
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "upgrade_required"


async def test_plain_get_of_the_socket_path_without_a_token_is_401(http: httpx.AsyncClient) -> None:
    assert (await http.get(WS)).status_code == 401
    assert (await http.get(WS, params={"access_token": "not-a-token"})).status_code == 401


async def test_a_group_body_with_1000_member_ids_is_not_too_large(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    caller = await new_user(http, tokens)
    members = [str(uuid.uuid4()) for _ in range(1000)]
    # One id per deeply indented line, every title character escaped: more than 64 KiB.
    body = json.dumps({"type": "group", "title": "é" * 200, "member_ids": members}, indent=24).encode()
    assert 64 * 1024 < len(body) <= GROUP_BODY_BYTES
    response = await http.post(CONVERSATIONS, content=body, headers={
        **caller.headers, "content-type": "application/json"})
    # Read and decoded: refused only because these users do not exist.
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == "member_ids"


async def test_group_creation_refuses_bodies_over_its_limit(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    caller = await new_user(http, tokens)
    body = b'{"type": "group", "title": "t", "member_ids": []' + b" " * GROUP_BODY_BYTES + b"}"
    response = await http.post(CONVERSATIONS, content=body, headers={
        **caller.headers, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["details"]["max_bytes"] == GROUP_BODY_BYTES


async def test_other_routes_keep_the_general_body_limit(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    admin, member = await new_users(http, tokens, 2)
    conversation = await create_group(http, admin, [member])
    body = b'{"body": "hi", "client_message_id": "x"' + b" " * (64 * 1024) + b"}"
    response = await http.post(
        f"{CONVERSATIONS}/{conversation['conversation']['id']}/messages", content=body,
        headers={**admin.headers, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["details"]["max_bytes"] == 64 * 1024


async def test_an_empty_limit_means_the_default_on_messages_and_the_inbox(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    admin, member = await new_users(http, tokens, 2)
    conversation = await create_group(http, admin, [member])
    conversation_id = conversation["conversation"]["id"]
    await send(http, admin, conversation_id, "hello")
    messages = await http.get(f"{CONVERSATIONS}/{conversation_id}/messages?limit=&before=&after=",
                              headers=admin.headers)
    assert messages.status_code == 200, messages.text
    assert len(messages.json()["items"]) == 1

    async def inbox_lists_it() -> bool:  # the relay fills the inbox within a moment
        inbox = await http.get(f"{INBOX}?limit=&cursor=", headers=admin.headers)
        assert inbox.status_code == 200, inbox.text
        return [e["conversation_id"] for e in inbox.json()["items"]] == [conversation_id]

    await wait_for_async(inbox_lists_it, 10, "the inbox to list the conversation")
