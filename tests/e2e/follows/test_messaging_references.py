"""Deleting a user who chatted: memberships leave every shard, messages stay with a
"Deleted user" sender, and `messenger check references` finds (and repairs) what dangles."""

from __future__ import annotations

import uuid

import httpx
import psycopg

from messenger.storage.audit.checks import reference_checks
from messenger.storage.audit.runner import audit
from messenger.storage.relay.messaging import DELETED_SENDER_NAME
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import Topology
from tests.e2e.follows.conftest import assert_clean, bearer, count_rows, new_user, runtime

CONVERSATIONS = "/api/v1/conversations"


async def _group_with_messages(api: httpx.AsyncClient, members: list[str]) -> str:
    owner = members[0]
    created = await api.post(CONVERSATIONS, headers=bearer(api, owner),
                             json={"type": "group", "title": "t", "member_ids": members[1:]})
    assert created.status_code == 201, created.text
    conversation_id: str = created.json()["conversation"]["id"]
    for member in members:
        sent = await api.post(f"{CONVERSATIONS}/{conversation_id}/messages", headers=bearer(api, member),
                              json={"body": f"hello from {member}", "client_message_id": uuid.uuid4().hex})
        assert sent.status_code == 201, sent.text
    return conversation_id


async def test_a_deleted_members_memberships_go_and_messages_stay_with_a_deleted_sender(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools, rel_topology: Topology
) -> None:
    members = [await new_user(rel_api, shard=s) for s in (0, 1, 2)]
    victim = members[1]
    conversations = [await _group_with_messages(rel_api, members) for _ in range(3)]
    await relay.drain()

    assert (await rel_api.delete(f"/api/v1/users/{victim}")).status_code == 204
    await relay.drain()

    assert_clean(await audit(pools, reference_checks(), relay, sample=20))
    assert count_rows(rel_topology, "SELECT count(*) FROM conversation_members WHERE user_id = %s", (victim,)) == 0
    kept = count_rows(rel_topology, "SELECT count(*) FROM messages WHERE sender_id = %s AND sender_name = %s",
                      (victim, DELETED_SENDER_NAME))
    assert kept == len(conversations)
    page = await rel_api.get(f"{CONVERSATIONS}/{conversations[0]}/messages", headers=bearer(rel_api, members[0]))
    assert DELETED_SENDER_NAME in {m["sender_name"] for m in page.json()["items"]}
    for conversation_id in conversations:  # the event log and resumes serve the messages as they are now
        events = await rel_api.get(f"{CONVERSATIONS}/{conversation_id}/events", params={"after": 0},
                                   headers=bearer(rel_api, members[0]))
        theirs = [e["message"] for e in events.json()["items"] if e.get("message", {}).get("sender_id") == victim]
        assert theirs and {m["sender_name"] for m in theirs} == {DELETED_SENDER_NAME}, theirs


async def test_check_finds_and_repairs_a_planted_dangling_member_and_sender(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools, rel_topology: Topology
) -> None:
    members = [await new_user(rel_api, shard=s) for s in (0, 1, 2)]
    conversation_id = await _group_with_messages(rel_api, members)
    await relay.drain()
    ghost = members[2]
    # Remove the user behind the application's back: no user.deleted event is written.
    shard = runtime(rel_api).router.shard_for(ghost)
    with psycopg.connect(rel_topology.shard(shard).primary_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id = %s", (ghost,))

    report = await audit(pools, reference_checks(), relay, sample=20)
    found = {k.kind: k.found for k in report.kinds}
    assert found["memberships"] >= 1 and found["message_senders"] >= 1
    repaired = await audit(pools, reference_checks(), relay, sample=20, repair=True)
    assert repaired.ok, repaired.to_json()
    assert_clean(await audit(pools, reference_checks(), relay, sample=20))
    assert count_rows(rel_topology, "SELECT count(*) FROM conversation_members WHERE conversation_id = %s",
                      (conversation_id,)) == 2
