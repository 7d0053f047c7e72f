"""Inboxes: written on each member's shard by the relay, ordered by activity, with unread counts;
a member shard that is down gets its updates when it returns, once each."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg

from messenger.services.tokens import TokenSigner
from messenger.storage.relay.messaging import DELETED_SENDER_NAME
from messenger.storage.shards.ring import HashRing
from tests.e2e.messaging.conftest import ChatServer
from tests.e2e.messaging.support import (
    CONVERSATIONS,
    INBOX,
    Caller,
    create_group,
    inbox,
    new_user,
    new_users,
    open_direct,
    send,
)
from tests.support.waiting import wait_for_async as wait_until

RELAY_DEADLINE_S = 20


def _summary(page: dict[str, Any]) -> list[tuple[str, str | None, int]]:
    return [(e["conversation_id"], e["last_message_preview"], e["unread_count"]) for e in page["items"]]


async def _inbox_becomes(
    http: httpx.AsyncClient, caller: Caller, expected: list[tuple[str, str | None, int]], deadline_s: float = RELAY_DEADLINE_S
) -> dict[str, Any]:
    async def matches() -> dict[str, Any] | None:
        page = await inbox(http, caller)
        return page if _summary(page) == expected else None

    try:
        return await wait_until(matches, deadline_s, f"inbox of {caller.id} to be {expected}")  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(f"inbox is {_summary(await inbox(http, caller))}, expected {expected}") from None


async def test_inbox_lists_conversations_by_last_activity_with_previews_and_unread_counts(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    me, p, q, r = await new_users(http, tokens, 4)
    d1 = (await open_direct(http, p, me))["conversation"]["id"]
    d2 = (await open_direct(http, q, me))["conversation"]["id"]
    g = (await create_group(http, r, [me], title="Club"))["conversation"]["id"]
    await send(http, p, d1, "a")
    await send(http, q, d2, "b")
    await send(http, r, g, "c")
    last = await send(http, p, d1, "d\nwith   spaces")
    page = await _inbox_becomes(http, me, [(d1, "d with spaces", 2), (g, "c", 1), (d2, "b", 1)])
    first = page["items"][0]
    assert first["type"] == "direct" and first["peer_id"] == str(p.id) and first["last_sender_name"] == p.name
    assert page["items"][1]["title"] == "Club" and page["items"][1]["peer_id"] is None

    await send(http, me, d2, "my own message is read")
    await _inbox_becomes(http, me, [(d2, "my own message is read", 0), (d1, "d with spaces", 2), (g, "c", 1)])
    await http.post(f"{CONVERSATIONS}/{d1}/read", json={"message_id": last["id"]}, headers=me.headers)
    await _inbox_becomes(http, me, [(d2, "my own message is read", 0), (d1, "d with spaces", 0), (g, "c", 1)])
    # The other side of d1 sees its own sends as read.
    await _inbox_becomes(http, p, [(d1, "d with spaces", 0)])


async def test_inbox_pages_with_a_cursor(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    me, *others = await new_users(http, tokens, 4)
    ids = [(await open_direct(http, o, me))["conversation"]["id"] for o in others]
    for other, cid in zip(others, ids, strict=True):
        await send(http, other, cid, "hey")
    await _inbox_becomes(http, me, [(cid, "hey", 1) for cid in reversed(ids)])
    first = await inbox(http, me, limit=2)
    second = await inbox(http, me, limit=2, cursor=first["next_cursor"])
    assert [e["conversation_id"] for e in first["items"] + second["items"]] == ids[::-1]
    bad = await http.get("/api/v1/me/conversations", params={"cursor": "forged"}, headers=me.headers)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "cursor"


async def test_edits_and_deletes_of_the_last_message_update_the_preview(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await open_direct(http, a, b))["conversation"]["id"]
    message = await send(http, a, cid, "frist")
    await _inbox_becomes(http, b, [(cid, "frist", 1)])
    await http.patch(f"{CONVERSATIONS}/{cid}/messages/{message['id']}", json={"body": "first"}, headers=a.headers)
    await _inbox_becomes(http, b, [(cid, "first", 1)])
    await http.delete(f"{CONVERSATIONS}/{cid}/messages/{message['id']}", headers=a.headers)
    await _inbox_becomes(http, b, [(cid, None, 1)])


async def test_leaving_a_group_removes_it_from_the_inbox_and_joining_shows_it_with_nothing_unread(
    http: httpx.AsyncClient, tokens: TokenSigner
) -> None:
    admin, member, late = await new_users(http, tokens, 3)
    cid = (await create_group(http, admin, [member]))["conversation"]["id"]
    await send(http, admin, cid, "before you came")
    await http.post(f"{CONVERSATIONS}/{cid}/members", json={"user_ids": [str(late.id)]}, headers=admin.headers)
    await _inbox_becomes(http, late, [(cid, "before you came", 0)])
    await http.delete(f"{CONVERSATIONS}/{cid}/members/{member.id}", headers=member.headers)
    await _inbox_becomes(http, member, [])


async def test_a_member_shard_down_gets_its_inbox_updates_when_it_returns_once_each(
    fresh: ChatServer, http: httpx.AsyncClient, tokens: TokenSigner, ring: HashRing, cluster: Any
) -> None:
    members = [await new_user(http, tokens, ring=ring, shard=s) for s in ring.shard_indexes]
    cid = (await create_group(http, members[0], members[1:]))["conversation"]["id"]
    # The conversation must stay writable: the victim lives on another shard than it.
    victim = next(m for m in members if ring.shard_for(str(m.id)) != ring.shard_for(cid))
    sender = next(m for m in members if m is not victim)
    victim_shard = ring.shard_for(str(victim.id))
    await send(http, sender, cid, "before")
    await _inbox_becomes(http, victim, [(cid, "before", 1)])

    cluster.stop_server(victim_shard, "primary")
    try:
        for text in ("while", "you were", "away"):
            await send(http, sender, cid, text)
        # Everyone else's inbox moves on without the victim's shard.
        others = [m for m in members if m not in (victim, sender)]
        for other in others:
            await _inbox_becomes(http, other, [(cid, "away", 4)])
        # The victim's inbox (read from its replica) is still as it was.
        assert _summary(await inbox(http, victim)) == [(cid, "before", 1)]
    finally:
        cluster.start_server(victim_shard, "primary")
    # Delivered after retries (with backoff), applied once: 4 unread, not more.
    await _inbox_becomes(http, victim, [(cid, "away", 4)], deadline_s=90)
    shard = cluster.topology.shard(victim_shard)
    with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT last_message_no, read_no FROM inbox WHERE user_id = %s AND conversation_id = %s",
            (victim.id, cid),
        ).fetchone()
    assert row == (4, 0)


async def test_a_deleted_user_leaves_their_conversations(
    http: httpx.AsyncClient, tokens: TokenSigner, ring: HashRing
) -> None:
    admin, doomed = await new_users(http, tokens, 2)
    cid = (await create_group(http, admin, [doomed]))["conversation"]["id"]
    await send(http, doomed, cid, "my last words")

    async def preview_from(name: str) -> bool:
        inbox = (await http.get(INBOX, headers=admin.headers)).json()["items"]
        return any(e["conversation_id"] == cid and e["last_sender_name"] == name for e in inbox)

    await wait_until(lambda: preview_from(doomed.name), RELAY_DEADLINE_S, "the preview of the message")
    assert (await http.delete(f"/api/v1/users/{doomed.id}", headers=doomed.headers)).status_code == 204

    async def gone() -> bool:
        view = (await http.get(f"{CONVERSATIONS}/{cid}", headers=admin.headers)).json()
        return [m["user_id"] for m in view["members"]] == [str(admin.id)]

    await wait_until(gone, RELAY_DEADLINE_S, "the deleted member to leave")
    events = (await http.get(f"{CONVERSATIONS}/{cid}/events", headers=admin.headers)).json()["items"]
    assert events[-1]["type"] == "member.removed" and events[-1]["user_id"] == str(doomed.id)
    assert events[-1]["by"] is None
    await wait_until(lambda: preview_from(DELETED_SENDER_NAME), RELAY_DEADLINE_S, "the preview's sender to go")


async def test_renaming_oneself_renames_one_s_past_messages(http: httpx.AsyncClient, tokens: TokenSigner) -> None:
    name = f"r{uuid.uuid4().hex[:12]}"
    registered = await http.post("/api/v1/accounts", json={
        "username": name, "email": f"{name}@example.com", "password": "s3cret-pass",
        "first_name": "Old", "last_name": "Name"})
    assert registered.status_code == 201, registered.text
    me = Caller(uuid.UUID(registered.json()["id"]), tokens.issue_access(uuid.UUID(registered.json()["id"]), uuid.uuid4()), "Old Name")
    other = await new_user(http, tokens)
    cid = (await open_direct(http, me, other))["conversation"]["id"]
    assert (await send(http, me, cid, "hi"))["sender_name"] == "Old Name"
    assert (await http.patch("/api/v1/me", json={"first_name": "New"}, headers=me.headers)).status_code == 200

    async def renamed() -> bool:
        items = (await http.get(f"{CONVERSATIONS}/{cid}/messages", headers=other.headers)).json()["items"]
        return items[0]["sender_name"] == "New Name"

    await wait_until(renamed, RELAY_DEADLINE_S, "the sender name to follow the rename")
