"""Deleting a user cleans up every shard, also when a shard was down or a follow raced the
deletion, and with two relays at once. `messenger check references` is the oracle."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx

from messenger.cluster.local import LocalCluster
from messenger.storage.audit.checks import reference_checks
from messenger.storage.audit.runner import audit
from messenger.storage.follows import FollowStore
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import Topology
from tests.e2e.follows.conftest import (
    USERS_URL,
    assert_clean,
    bearer,
    count_rows,
    follow,
    new_user,
    runtime,
    skip_backoff,
)
from tests.support.waiting import wait_for_async

PASSWORD = "s3cret-pass"


async def _check(pools: PrimaryPools, relay: OutboxRelay):  # type: ignore[no-untyped-def]
    return await audit(pools, reference_checks(), relay, sample=50)


async def _counts(api: httpx.AsyncClient, user_id: str) -> tuple[int, int]:
    response = await api.get(f"{USERS_URL}/{user_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["following_count"], body["followers_count"]


async def _register(api: httpx.AsyncClient, shard: int) -> tuple[str, str]:
    """A user with an account (so with username and email claims) on `shard`."""
    router = runtime(api).router
    while True:
        name = f"v{uuid.uuid4().hex[:12]}"
        response = await api.post("/api/v1/accounts", json={
            "username": name, "email": f"{name}@example.com", "password": PASSWORD,
            "first_name": "Victim", "last_name": "Test"})
        assert response.status_code == 201, response.text
        user_id: str = response.json()["id"]
        if router.shard_for(user_id) == shard:
            return user_id, name
        assert (await api.delete("/api/v1/me", headers=bearer(api, user_id))).status_code == 204


async def test_deleting_a_user_with_edges_on_every_shard_leaves_nothing_dangling(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools, rel_topology: Topology
) -> None:
    victim, username = await _register(rel_api, shard=0)
    others = [await new_user(rel_api, shard=s) for s in (0, 1, 2) for _ in range(2)]
    for other in others:
        assert (await follow(rel_api, other, victim)).status_code == 201
        assert (await follow(rel_api, victim, other)).status_code == 201
    await relay.drain()
    assert await _counts(rel_api, victim) == (len(others), len(others))

    assert (await rel_api.delete("/api/v1/me", headers=bearer(rel_api, victim))).status_code == 204
    await relay.drain()

    assert_clean(await _check(pools, relay))
    for sql in ("SELECT count(*) FROM follows WHERE followee_id = %s OR follower_id = %s",
                "SELECT count(*) FROM followers WHERE followee_id = %s OR follower_id = %s"):
        assert count_rows(rel_topology, sql, (victim, victim)) == 0
    assert count_rows(rel_topology, "SELECT count(*) FROM username_claims WHERE username = %s", (username,)) == 0
    for other in others:
        assert await _counts(rel_api, other) == (0, 0)


async def test_a_shard_down_during_the_deletion_gets_its_clean_up_when_it_returns(
    cluster: LocalCluster, rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools,
    rel_topology: Topology,
) -> None:
    down = 2
    victim = await new_user(rel_api, shard=0)
    fans = [await new_user(rel_api, shard=down) for _ in range(3)]
    for fan in fans:
        await follow(rel_api, fan, victim)
        await follow(rel_api, victim, fan)
    await relay.drain()

    cluster.stop_server(down, "primary")
    try:
        assert (await rel_api.delete(f"{USERS_URL}/{victim}")).status_code == 204  # its shard is up
        result = await relay.run_once()
        assert result.failed >= 1 and result.skipped_shards == ["shard_2"]
        backlog = {b.shard: b for b in [await relay.shard_backlog(0)]}
        assert backlog["shard_0"].pending == 1, "the clean-up waits, it is not lost"
        during = await _check(pools, relay)
        assert not during.ok and "shard_2" in during.unreachable
    finally:
        cluster.start_server(down, "primary")
    skip_backoff(rel_topology)
    await relay.drain(timeout_s=60)

    assert_clean(await _check(pools, relay))
    assert count_rows(rel_topology, "SELECT count(*) FROM follows WHERE followee_id = %s", (victim,)) == 0
    assert count_rows(rel_topology, "SELECT count(*) FROM followers WHERE follower_id = %s", (victim,)) == 0
    # The API's own breaker for the restarted primary may still be open for its reset window
    # (its replica monitor saw the outage); a client retrying a 503 gets through after it.
    async def answering() -> bool:
        return (await rel_api.get(f"{USERS_URL}/{fans[0]}")).status_code != 503

    await wait_for_async(answering, 10, "shard_2 answering the API again")
    for fan in fans:
        assert await _counts(rel_api, fan) == (0, 0)


async def test_a_follow_written_after_the_targets_clean_up_is_undone_by_the_relay(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools
) -> None:
    """The interleaving: the follow checks the target (exists), the target is deleted and its
    clean-up relayed, then the follow's edge lands: dangling until its own event runs."""
    follower, target = await new_user(rel_api, shard=1), await new_user(rel_api, shard=2)
    store = FollowStore(runtime(rel_api).router)
    names = await store.names(uuid.UUID(target))
    assert names is not None
    assert (await rel_api.delete(f"{USERS_URL}/{target}")).status_code == 204
    await relay.drain()
    made = await store.follow(uuid.UUID(follower), uuid.UUID(target), names)
    assert made is not None and made.created

    before = await _check(pools, relay)
    follows = next(k for k in before.kinds if k.kind == "follows")
    assert follows.found == 1 and follows.shards[1].samples[0].problem == "dangling"

    await relay.drain()
    assert_clean(await _check(pools, relay))
    assert await _counts(rel_api, follower) == (0, 0)


async def test_a_follow_made_before_the_deletion_but_relayed_after_leaves_nothing(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools
) -> None:
    follower, target = await new_user(rel_api, shard=0), await new_user(rel_api, shard=1)
    assert (await follow(rel_api, follower, target)).status_code == 201
    assert (await rel_api.delete(f"{USERS_URL}/{target}")).status_code == 204
    await relay.drain()  # in whichever order the two shards' events go, the end state is clean
    assert_clean(await _check(pools, relay))
    assert await _counts(rel_api, follower) == (0, 0)


async def test_two_relays_at_once_under_follow_traffic_leave_every_reference_consistent(
    rel_api: httpx.AsyncClient, rel_topology: Topology, pools: PrimaryPools, relay: OutboxRelay
) -> None:
    users = [await new_user(rel_api, shard=s) for s in (0, 1, 2) for _ in range(3)]
    rng = random.Random(7)
    stop = asyncio.Event()

    async def relay_loop(shards: PrimaryPools) -> None:
        other = OutboxRelay(shards, HANDLERS, batch_size=3)
        while not stop.is_set():
            await other.run_once()
            await asyncio.sleep(0)

    async with PrimaryPools(rel_topology) as second_pools:
        relays = [asyncio.create_task(relay_loop(pools)), asyncio.create_task(relay_loop(second_pools))]
        try:
            for _ in range(120):
                a, b = rng.sample(users, 2)
                if rng.random() < 0.65:
                    assert (await follow(rel_api, a, b)).status_code in (200, 201)
                else:
                    await rel_api.delete(f"{USERS_URL}/{b}/follow", headers=bearer(rel_api, a))
            gone = users.pop(rng.randrange(len(users)))
            assert (await rel_api.delete(f"{USERS_URL}/{gone}")).status_code == 204
            for _ in range(30):
                a, b = rng.sample(users, 2)
                await follow(rel_api, a, b)
        finally:
            stop.set()
            await asyncio.gather(*relays)
    await relay.drain()

    assert_clean(await _check(pools, relay))
    edges = count_rows(rel_topology, "SELECT count(*) FROM follows WHERE follower_id = ANY(%s::uuid[])", (users,))
    reverse = count_rows(rel_topology, "SELECT count(*) FROM followers WHERE followee_id = ANY(%s::uuid[])", (users,))
    assert edges == reverse > 0
    ledger = count_rows(rel_topology, "SELECT count(*) - count(DISTINCT (event_id, target)) FROM applied_events")
    assert ledger == 0
