"""Follows through the session's API with replicas and its own background relay: the
follower reads its own follow at once, the followee's end and renamed names follow shortly."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg

from messenger.topology import Topology
from tests.e2e.api.conftest import OPS, USERS_URL, runtime
from tests.support.waiting import wait_for_async

RENAME_BOUND_S = 10.0
"""Rename → every copy updated. Measured ~0.1-0.3 s on an idle 2-core box (relay idle poll
0.1 s + one pass); the bound is generous because other test runs share the cores."""


async def _user(api: httpx.AsyncClient, first: str) -> tuple[str, dict[str, str]]:
    response = await api.post(USERS_URL, json={"first_name": first, "last_name": "Test"})
    assert response.status_code == 201
    user_id = response.json()["id"]
    token = runtime(api).api.tokens.issue_access(uuid.UUID(user_id), uuid.uuid4())
    return user_id, {"Authorization": f"Bearer {token}"}


async def _names(api: httpx.AsyncClient, user_id: str, listing: str) -> dict[str, str]:
    response = await api.get(f"{USERS_URL}/{user_id}/{listing}")
    assert response.status_code == 200
    return {e["id"]: e["first_name"] for e in response.json()["items"]}


async def test_the_follower_reads_its_follow_and_count_at_once_and_the_followee_shortly(
    api: httpx.AsyncClient,
) -> None:
    alice, alice_auth = await _user(api, "Alice")
    bob, _ = await _user(api, "Bob")
    assert (await api.put(f"{USERS_URL}/{bob}/follow", headers=alice_auth)).status_code == 201
    assert await _names(api, alice, "following") == {bob: "Bob"}  # read-your-writes
    assert (await api.get(f"{USERS_URL}/{alice}")).json()["following_count"] == 1
    await wait_for_async(lambda: _names(api, bob, "followers"), 10, "the reverse edge")
    assert (await api.get(f"{USERS_URL}/{bob}")).json()["followers_count"] == 1


async def test_a_rename_reaches_every_copy_of_the_name_within_the_bound(
    api: httpx.AsyncClient, topology: Topology
) -> None:
    xavier, xavier_auth = await _user(api, "Xavier")
    yara, yara_auth = await _user(api, "Yara")
    await api.put(f"{USERS_URL}/{yara}/follow", headers=xavier_auth)
    await api.put(f"{USERS_URL}/{xavier}/follow", headers=yara_auth)
    await wait_for_async(lambda: _names(api, xavier, "followers"), 10, "yara's reverse edge")

    started = time.monotonic()
    renamed = await api.patch(f"{USERS_URL}/{yara}", json={"first_name": "Yolanda"}, headers=yara_auth)
    assert renamed.status_code == 200

    async def copies_updated() -> bool:
        return (await _names(api, xavier, "following"))[yara] == "Yolanda" and (
            await _names(api, xavier, "followers"))[yara] == "Yolanda"

    await wait_for_async(copies_updated, RENAME_BOUND_S, "both copies of the new name")
    lag = time.monotonic() - started
    print(f"rename propagation lag: {lag * 1000:.0f} ms")
    assert lag < RENAME_BOUND_S


async def test_only_a_real_name_change_writes_user_renamed(api: httpx.AsyncClient, topology: Topology) -> None:
    user, auth = await _user(api, "Same")
    for body in ({"first_name": "Same", "last_name": "Test"}, {"first_name": "Other", "last_name": "Test"}):
        assert (await api.put(f"{USERS_URL}/{user}", json=body, headers=auth)).status_code == 200
    assert (await api.patch(f"{USERS_URL}/{user}", json={"last_name": "Test"}, headers=auth)).status_code == 200
    events = 0
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM outbox WHERE type = 'user.renamed' AND aggregate = %s", (f"user:{user}",)
            ).fetchone()
            events += row[0] if row else 0
    assert events == 1


async def test_metrics_expose_the_outbox_backlog_per_shard(api: httpx.AsyncClient, topology: Topology) -> None:
    text = (await api.get("/metrics", headers=OPS)).text
    for shard in topology.shards:
        for metric in ("outbox_pending_events", "outbox_oldest_pending_age_seconds", "outbox_dead_letters"):
            assert f'{metric}{{shard="{shard.name}"}}' in text
