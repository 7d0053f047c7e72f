"""Follow and unfollow across shards: the follower's end at once, the followee's end through
the relay, counts on the user resource, paginated lists, and what is refused."""

from __future__ import annotations

import httpx

from messenger.storage.relay.runner import OutboxRelay
from messenger.topology import Topology
from tests.e2e.follows.conftest import USERS_URL, bearer, count_rows, follow, new_user


async def _user(api: httpx.AsyncClient, user_id: str) -> dict:
    response = await api.get(f"{USERS_URL}/{user_id}")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_follow_across_shards_writes_both_ends_and_counts(
    rel_api: httpx.AsyncClient, relay: OutboxRelay
) -> None:
    alice = await new_user(rel_api, "Alice", shard=0)
    bob = await new_user(rel_api, "Bob", shard=1)
    response = await follow(rel_api, alice, bob)
    assert response.status_code == 201, response.text
    assert response.json()["follower_id"] == alice and response.json()["followee_id"] == bob

    following = (await rel_api.get(f"{USERS_URL}/{alice}/following")).json()
    assert [(e["id"], e["first_name"]) for e in following["items"]] == [(bob, "Bob")]
    assert (await _user(rel_api, alice))["following_count"] == 1
    assert (await rel_api.get(f"{USERS_URL}/{bob}/followers")).json()["items"] == []  # not yet relayed

    await relay.drain()
    followers = (await rel_api.get(f"{USERS_URL}/{bob}/followers")).json()
    assert [(e["id"], e["first_name"]) for e in followers["items"]] == [(alice, "Alice")]
    assert followers["items"][0]["followed_at"] == following["items"][0]["followed_at"]
    assert (await _user(rel_api, bob))["followers_count"] == 1


async def test_following_twice_is_idempotent_200_with_one_row_and_one_event(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, rel_topology: Topology
) -> None:
    alice, bob = await new_user(rel_api, shard=1), await new_user(rel_api, shard=2)
    first, again = await follow(rel_api, alice, bob), await follow(rel_api, alice, bob)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    await relay.drain()
    assert count_rows(rel_topology, "SELECT count(*) FROM follows WHERE follower_id = %s", (alice,)) == 1
    assert count_rows(rel_topology, "SELECT count(*) FROM followers WHERE followee_id = %s", (bob,)) == 1
    assert count_rows(
        rel_topology, "SELECT count(*) FROM outbox WHERE type = 'follow.created' AND payload->>'followee_id' = %s",
        (bob,),
    ) == 1
    assert (await _user(rel_api, alice))["following_count"] == 1
    assert (await _user(rel_api, bob))["followers_count"] == 1


async def test_unfollow_removes_both_ends_and_is_idempotent(
    rel_api: httpx.AsyncClient, relay: OutboxRelay
) -> None:
    alice, bob = await new_user(rel_api, shard=2), await new_user(rel_api, shard=0)
    await follow(rel_api, alice, bob)
    await relay.drain()
    for _ in range(2):
        response = await rel_api.delete(f"{USERS_URL}/{bob}/follow", headers=bearer(rel_api, alice))
        assert response.status_code == 204
    await relay.drain()
    assert (await rel_api.get(f"{USERS_URL}/{alice}/following")).json()["items"] == []
    assert (await rel_api.get(f"{USERS_URL}/{bob}/followers")).json()["items"] == []
    assert (await _user(rel_api, alice))["following_count"] == 0
    assert (await _user(rel_api, bob))["followers_count"] == 0


async def test_follow_unfollow_follow_in_one_relay_batch_ends_followed(
    rel_api: httpx.AsyncClient, relay: OutboxRelay
) -> None:
    alice, bob = await new_user(rel_api, shard=0), await new_user(rel_api, shard=2)
    await follow(rel_api, alice, bob)
    await rel_api.delete(f"{USERS_URL}/{bob}/follow", headers=bearer(rel_api, alice))
    await follow(rel_api, alice, bob)
    await relay.drain()
    followers = (await rel_api.get(f"{USERS_URL}/{bob}/followers")).json()["items"]
    assert [e["id"] for e in followers] == [alice]
    assert (await _user(rel_api, bob))["followers_count"] == 1


async def test_self_follow_is_422_and_unknown_target_is_404(rel_api: httpx.AsyncClient) -> None:
    alice = await new_user(rel_api)
    itself = await follow(rel_api, alice, alice)
    assert itself.status_code == 422 and itself.json()["error"]["code"] == "invalid_input"
    ghost = "01890000-0000-7000-8000-000000000000"
    missing = await follow(rel_api, alice, ghost)
    assert missing.status_code == 404 and missing.json()["error"]["details"]["id"] == ghost
    assert (await rel_api.get(f"{USERS_URL}/{ghost}/followers")).status_code == 404
    assert (await rel_api.get(f"{USERS_URL}/{ghost}/following")).status_code == 404


async def test_follow_needs_an_access_token(rel_api: httpx.AsyncClient) -> None:
    bob = await new_user(rel_api)
    response = await rel_api.put(f"{USERS_URL}/{bob}/follow")
    assert response.status_code == 401
    assert (await rel_api.delete(f"{USERS_URL}/{bob}/follow")).status_code == 401
    assert (await rel_api.put(f"{USERS_URL}/not-a-uuid/follow", headers=bearer(rel_api, bob))).status_code == 400


async def test_lists_page_newest_first_with_cursors_bound_to_their_list(
    rel_api: httpx.AsyncClient, relay: OutboxRelay
) -> None:
    star = await new_user(rel_api, "Star")
    fans = [await new_user(rel_api, f"Fan{i}") for i in range(5)]
    for fan in fans:
        assert (await follow(rel_api, fan, star)).status_code == 201
    await relay.drain()
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await rel_api.get(f"{USERS_URL}/{star}/followers", params=params)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(fans))
    first = (await rel_api.get(f"{USERS_URL}/{star}/followers", params={"limit": 2})).json()
    for url in (f"{USERS_URL}/{star}/following", f"{USERS_URL}/{fans[0]}/followers"):
        refused = await rel_api.get(url, params={"cursor": first["next_cursor"]})
        assert refused.status_code == 422 and refused.json()["error"]["details"]["field"] == "cursor"
    assert (await rel_api.get(f"{USERS_URL}/{star}/followers", params={"limit": 0})).status_code == 422
