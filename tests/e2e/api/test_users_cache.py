"""The users-by-id read cache with two API instances over one cluster: what one instance
writes, the other serves, whether its cache held the user or not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import psycopg
import pytest

from messenger.api.users import TOKEN_HEADER
from messenger.settings import Settings
from messenger.storage.cache.users import UserCache
from messenger.topology import Topology
from tests.e2e.api.conftest import USERS_URL, running_app, runtime
from tests.support.waiting import wait_for_async

DELIVERY_S = 5.0
"""Publish → the other instance dropped the key: milliseconds; generous for shared cores."""


@pytest.fixture(scope="module")
def cache_settings(settings: Settings) -> Settings:
    # A TTL far beyond the tests: anything stale they read would stay stale.
    return replace(settings, cache=True, cache_ttl_s=600.0)


@pytest.fixture(scope="module")
async def instance_a(cache_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(cache_settings) as client:
        yield client


@pytest.fixture(scope="module")
async def instance_b(cache_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(cache_settings) as client:
        yield client


def _cache(client: httpx.AsyncClient) -> UserCache:
    cache = runtime(client).user_cache
    assert cache is not None
    return cache


async def _create(client: httpx.AsyncClient, first: str = "Ada") -> str:
    response = await client.post(USERS_URL, json={"first_name": first, "last_name": "Cache"})
    assert response.status_code == 201
    return str(response.json()["id"])


async def _cached(client: httpx.AsyncClient, user_id: str) -> dict[str, object]:
    """GET the user until the instance answers it from its cache (fills wait out the hold
    after startup and after the user's own writes); the body it served."""
    cache = _cache(client)
    served: dict[str, object] = {}

    async def hit() -> bool:
        before = cache.hits
        response = await client.get(f"{USERS_URL}/{user_id}")
        assert response.status_code == 200
        served.update(response.json())
        return cache.hits > before

    await wait_for_async(hit, 15, "a cache hit")
    return served


async def test_a_second_get_is_answered_from_the_cache(instance_a: httpx.AsyncClient) -> None:
    user_id = await _create(instance_a)
    body = await _cached(instance_a, user_id)
    assert body["first_name"] == "Ada"
    samples = runtime(instance_a).metrics.registry.get_sample_value("cache_hits_total", {"cache": "users"})
    assert samples is not None and samples >= 1


async def test_a_patch_on_one_instance_is_read_on_the_other_with_its_token(
    instance_a: httpx.AsyncClient, instance_b: httpx.AsyncClient,
) -> None:
    user_id = await _create(instance_a)
    await _cached(instance_b, user_id)
    patched = await instance_a.patch(f"{USERS_URL}/{user_id}", json={"first_name": "Grace"})
    assert patched.status_code == 200
    token = patched.headers[TOKEN_HEADER]
    got = await instance_b.get(f"{USERS_URL}/{user_id}", headers={TOKEN_HEADER: token})
    assert got.json()["first_name"] == "Grace"


async def test_a_patch_on_one_instance_is_read_on_the_other_without_a_token(
    instance_a: httpx.AsyncClient, instance_b: httpx.AsyncClient,
) -> None:
    user_id = await _create(instance_a)
    await _cached(instance_b, user_id)
    before = _cache(instance_b).invalidations
    assert (await instance_a.patch(f"{USERS_URL}/{user_id}", json={"first_name": "Grace"})).status_code == 200

    async def invalidated() -> bool:
        return _cache(instance_b).invalidations > before

    await wait_for_async(invalidated, DELIVERY_S, "the invalidation on the other instance")
    assert (await instance_b.get(f"{USERS_URL}/{user_id}")).json()["first_name"] == "Grace"
    # And once the replicas hold it, the new row is what the other instance caches.
    assert (await _cached(instance_b, user_id))["first_name"] == "Grace"


async def test_a_user_deleted_on_one_instance_is_gone_on_the_other(
    instance_a: httpx.AsyncClient, instance_b: httpx.AsyncClient,
) -> None:
    user_id = await _create(instance_a)
    await _cached(instance_b, user_id)
    assert (await instance_a.delete(f"{USERS_URL}/{user_id}")).status_code == 204
    assert (await instance_b.get(f"{USERS_URL}/{user_id}")).status_code == 404  # marker bypass

    async def invalidated() -> bool:
        hit, _ = _cache(instance_b).get(uuid.UUID(user_id))
        return not hit

    await wait_for_async(invalidated, DELIVERY_S, "the entry dropped on the other instance")
    for client in (instance_a, instance_b):
        assert (await client.get(f"{USERS_URL}/{user_id}")).status_code == 404


async def test_losing_the_subscription_clears_the_cache(
    instance_b: httpx.AsyncClient, topology: Topology,
) -> None:
    user_id = await _create(instance_b)
    await _cached(instance_b, user_id)
    # A write the instance hears nothing about (as if its invalidation was lost) …
    shard = runtime(instance_b).router.shard_for(uuid.UUID(user_id))
    with psycopg.connect(topology.shard(shard).primary_dsn, autocommit=True) as conn:
        conn.execute("UPDATE users SET first_name = 'Unheard' WHERE id = %s", (user_id,))
    assert (await instance_b.get(f"{USERS_URL}/{user_id}")).json()["first_name"] == "Ada"  # still cached
    # … then the subscription drops: the cache cannot know what it missed, so it empties.
    await runtime(instance_b).redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    async def fresh() -> bool:
        response = await instance_b.get(f"{USERS_URL}/{user_id}")
        return bool(response.json()["first_name"] == "Unheard")

    await wait_for_async(fresh, DELIVERY_S, "the cache cleared on the lost subscription")

    async def resubscribed() -> bool:
        return _cache(instance_b).usable

    await wait_for_async(resubscribed, DELIVERY_S, "the subscription back")
    assert (await _cached(instance_b, user_id))["first_name"] == "Unheard"


async def test_a_follow_counted_by_the_relay_is_read_through_the_cache(
    instance_a: httpx.AsyncClient, instance_b: httpx.AsyncClient,
) -> None:
    alice, bob = await _create(instance_a, "Alice"), await _create(instance_a, "Bob")
    assert (await _cached(instance_b, bob))["followers_count"] == 0
    assert (await _cached(instance_b, alice))["following_count"] == 0
    token = runtime(instance_a).api.tokens.issue_access(uuid.UUID(alice), uuid.uuid4())
    followed = await instance_a.put(f"{USERS_URL}/{bob}/follow", headers={"Authorization": f"Bearer {token}"})
    assert followed.status_code == 201

    async def counted() -> bool:
        response = await instance_b.get(f"{USERS_URL}/{bob}")
        return bool(response.json()["followers_count"] == 1)

    await wait_for_async(counted, 10, "the followee's count through the other instance's cache")
    assert (await instance_b.get(f"{USERS_URL}/{alice}")).json()["following_count"] == 1


async def _relayed(client: httpx.AsyncClient) -> None:
    background = runtime(client).background
    assert background is not None
    await background.relay.drain()


async def test_deleting_a_user_nobody_follows_leaves_other_users_cached(
    instance_a: httpx.AsyncClient, instance_b: httpx.AsyncClient,
) -> None:
    """Its clean-up changes no users row: every cache used to be cleared (and kept from
    filling for the replica-lag bound) after each deletion, so a steady trickle of deletions
    left no cache hits at all (`make bench`, read phases after crud)."""
    kept, gone = await _create(instance_a, "Kept"), await _create(instance_a, "Gone")
    await _cached(instance_b, kept)
    assert (await instance_a.delete(f"{USERS_URL}/{gone}")).status_code == 204
    await _relayed(instance_a)
    await _relayed(instance_b)
    cache = _cache(instance_b)
    hit, _ = cache.get(uuid.UUID(kept))
    assert hit


async def test_deleting_a_followed_user_reaches_its_followers_counts_through_the_cache(
    instance_a: httpx.AsyncClient, instance_b: httpx.AsyncClient,
) -> None:
    alice, bob = await _create(instance_a, "Alice"), await _create(instance_a, "Bob")
    token = runtime(instance_a).api.tokens.issue_access(uuid.UUID(alice), uuid.uuid4())
    followed = await instance_a.put(f"{USERS_URL}/{bob}/follow", headers={"Authorization": f"Bearer {token}"})
    assert followed.status_code == 201

    async def following() -> bool:
        return bool((await _cached(instance_b, alice))["following_count"] == 1)

    await wait_for_async(following, 10, "the follow counted, and cached on the other instance")
    assert (await instance_a.delete(f"{USERS_URL}/{bob}")).status_code == 204

    async def uncounted() -> bool:
        response = await instance_b.get(f"{USERS_URL}/{alice}")
        return bool(response.json()["following_count"] == 0)

    await wait_for_async(uncounted, 10, "the deleted followee uncounted through the other instance's cache")


async def test_with_the_cache_off_nothing_is_cached(settings: Settings) -> None:
    async with running_app(replace(settings, cache=False)) as client:
        assert runtime(client).user_cache is None
        user_id = await _create(client)
        for _ in range(3):
            assert (await client.get(f"{USERS_URL}/{user_id}")).status_code == 200
        hits = runtime(client).metrics.registry.get_sample_value("cache_hits_total", {"cache": "users"})
        assert not hits
