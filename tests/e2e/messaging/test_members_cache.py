"""The memberships read cache with two API instances over one cluster: once a removal (by an
admin, by leaving, by the relay after an account deletion) has returned, no instance lets the
removed user type, send or read the history, whatever its cache held."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import psycopg
import pytest

from messenger.domain.errors import NotFound
from messenger.services.tokens import TokenSigner
from messenger.settings import Settings
from messenger.storage.cache.members import MembershipCache
from tests.e2e.api.conftest import running_app, runtime
from tests.e2e.messaging.conftest import ChatServer, serving
from tests.e2e.messaging.support import CONVERSATIONS, Caller, create_group, new_users, send
from tests.support.waiting import wait_for_async as wait_until

DELIVERY_S = 5.0
"""Publish → the other instance dropped the key: milliseconds; generous for shared cores."""
RELAY_DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def cache_settings(chat_settings: Settings) -> Settings:
    # A TTL far beyond the tests: anything stale they read would stay stale.
    return replace(chat_settings, cache=True, cache_ttl_s=600.0)


@pytest.fixture(scope="module")
async def instance_a(cache_settings: Settings) -> AsyncIterator[ChatServer]:
    async with serving(cache_settings) as server:
        yield server


@pytest.fixture(scope="module")
async def instance_b(cache_settings: Settings) -> AsyncIterator[ChatServer]:
    async with serving(cache_settings) as server:
        yield server


@pytest.fixture(scope="module")
async def http_a(instance_a: ChatServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=instance_a.base, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
async def http_b(instance_b: ChatServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=instance_b.base, timeout=10) as client:
        yield client


def _cache(server: ChatServer) -> MembershipCache:
    cache = server.runtime.member_cache
    assert cache is not None
    return cache


async def _may_type(server: ChatServer, caller: Caller, cid: str) -> bool:
    try:
        await server.runtime.api.messaging.typing(caller.id, uuid.UUID(cid))
    except NotFound:
        return False
    return True


async def _cached(server: ChatServer, caller: Caller, cid: str) -> None:
    """Type until the instance answers the membership from its cache (fills wait out the hold
    after startup and after removals)."""
    cache = _cache(server)

    async def hit() -> bool:
        before = cache.hits
        assert await _may_type(server, caller, cid)
        return cache.hits > before

    await wait_until(hit, 15, "a memberships cache hit")


async def _group_with_cached_member(
    http_a: httpx.AsyncClient, tokens: TokenSigner, instance_b: ChatServer
) -> tuple[Caller, Caller, str]:
    admin, member = await new_users(http_a, tokens, 2)
    cid = str((await create_group(http_a, admin, [member]))["conversation"]["id"])
    await send(http_a, member, cid, "before")
    await _cached(instance_b, member, cid)
    return admin, member, cid


async def _refused_everywhere(
    instance_b: ChatServer, http_b: httpx.AsyncClient, member: Caller, cid: str
) -> None:
    assert not await _may_type(instance_b, member, cid)
    sent = await http_b.post(
        f"{CONVERSATIONS}/{cid}/messages", json={"body": "after", "client_message_id": uuid.uuid4().hex},
        headers=member.headers,
    )
    assert sent.status_code == 404, sent.text
    history = await http_b.get(f"{CONVERSATIONS}/{cid}/messages", headers=member.headers)
    assert history.status_code == 404, history.text


async def test_typing_is_answered_from_the_cache_and_counted(
    instance_a: ChatServer, http_a: httpx.AsyncClient, tokens: TokenSigner,
) -> None:
    await _group_with_cached_member(http_a, tokens, instance_a)
    metrics = instance_a.runtime.metrics.registry
    assert (metrics.get_sample_value("cache_hits_total", {"cache": "members"}) or 0) >= 1
    assert (metrics.get_sample_value("cache_misses_total", {"cache": "members"}) or 0) >= 1
    assert len(_cache(instance_a)) >= 1


async def test_a_member_removed_on_one_instance_is_refused_on_the_other_at_once(
    instance_a: ChatServer, instance_b: ChatServer, http_a: httpx.AsyncClient, http_b: httpx.AsyncClient,
    tokens: TokenSigner,
) -> None:
    admin, member, cid = await _group_with_cached_member(http_a, tokens, instance_b)
    removed = await http_a.delete(f"{CONVERSATIONS}/{cid}/members/{member.id}", headers=admin.headers)
    assert removed.status_code == 204, removed.text
    await _refused_everywhere(instance_b, http_b, member, cid)
    assert await _may_type(instance_b, admin, cid)  # the others still may


async def test_a_member_who_left_on_one_instance_is_refused_on_the_other_at_once(
    instance_a: ChatServer, instance_b: ChatServer, http_a: httpx.AsyncClient, http_b: httpx.AsyncClient,
    tokens: TokenSigner,
) -> None:
    _, member, cid = await _group_with_cached_member(http_a, tokens, instance_b)
    left = await http_a.delete(f"{CONVERSATIONS}/{cid}/members/{member.id}", headers=member.headers)
    assert left.status_code == 204, left.text
    await _refused_everywhere(instance_b, http_b, member, cid)


async def test_the_relay_removing_a_deleted_user_clears_the_other_instance_s_cache(
    instance_a: ChatServer, instance_b: ChatServer, http_a: httpx.AsyncClient, tokens: TokenSigner,
) -> None:
    admin, doomed, cid = await _group_with_cached_member(http_a, tokens, instance_b)
    assert (await http_a.delete(f"/api/v1/users/{doomed.id}")).status_code == 204

    async def gone() -> bool:
        view = (await http_a.get(f"{CONVERSATIONS}/{cid}", headers=admin.headers)).json()
        return [m["user_id"] for m in view["members"]] == [str(admin.id)]

    await wait_until(gone, RELAY_DEADLINE_S, "the relay to remove the deleted member")

    async def refused() -> bool:
        return not await _may_type(instance_b, doomed, cid)

    # The cache held the membership for 600 s: only the relay's invalidation can end it.
    await wait_until(refused, DELIVERY_S, "the other instance to drop the deleted member")


async def test_losing_the_subscription_bypasses_the_cache_instead_of_failing(
    instance_a: ChatServer, instance_b: ChatServer, http_a: httpx.AsyncClient, tokens: TokenSigner,
    cache_settings: Settings,
) -> None:
    admin, member, cid = await _group_with_cached_member(http_a, tokens, instance_b)
    # A removal the instance hears nothing about (as if its invalidation was lost) …
    router = instance_b.runtime.router
    primary = cache_settings.topology.shard(router.shard_for(uuid.UUID(cid))).primary_dsn
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM conversation_members WHERE conversation_id = %s AND user_id = %s", (cid, member.id)
        )
    assert await _may_type(instance_b, member, cid)  # still cached
    # … then the subscription drops: the cache cannot know what it missed, so it is bypassed
    # (and emptied); reads go to the database and nothing fails.
    await instance_b.runtime.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    async def refused() -> bool:
        return not await _may_type(instance_b, member, cid)

    await wait_until(refused, DELIVERY_S, "the cache bypassed on the lost subscription")
    assert await _may_type(instance_b, admin, cid)

    async def resubscribed() -> bool:
        return _cache(instance_b).usable

    await wait_until(resubscribed, DELIVERY_S, "the subscription back")
    await _cached(instance_b, admin, cid)


async def test_with_the_cache_off_there_is_none_and_removals_still_hold(
    chat_settings: Settings, tokens: TokenSigner,
) -> None:
    async with running_app(replace(chat_settings, cache=False)) as client:
        messaging = runtime(client).api.messaging
        assert runtime(client).member_cache is None
        admin, member = await new_users(client, tokens, 2)
        cid = str((await create_group(client, admin, [member]))["conversation"]["id"])
        await messaging.typing(member.id, uuid.UUID(cid))
        removed = await client.delete(f"{CONVERSATIONS}/{cid}/members/{member.id}", headers=admin.headers)
        assert removed.status_code == 204
        with pytest.raises(NotFound):
            await messaging.typing(member.id, uuid.UUID(cid))
