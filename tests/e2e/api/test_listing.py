"""Listing users across shards: scatter-gather, k-way merge, keyset cursors."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.e2e.api.conftest import USERS_URL, runtime, wait_replicas_caught_up


async def page_through(api: httpx.AsyncClient, order: str, limit: int, on_page=None) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": limit, "order": order} | ({"cursor": cursor} if cursor else {})
        response = await api.get(USERS_URL, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        ids += [u["id"] for u in body["items"]]
        if on_page is not None:
            await on_page()
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


async def create_many(api: httpx.AsyncClient, n: int) -> list[str]:
    responses = await asyncio.gather(*(
        api.post(USERS_URL, json={"first_name": f"L{i}", "last_name": "List"}) for i in range(n)
    ))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201]
    return [r.json()["id"] for r in responses]


async def test_list_default_page_has_20_items_sorted_by_id(api: httpx.AsyncClient) -> None:
    await create_many(api, 25)
    body = (await api.get(USERS_URL)).json()
    ids = [u["id"] for u in body["items"]]
    assert len(ids) == 20
    assert ids == sorted(ids, key=uuid.UUID)
    assert body["next_cursor"]


async def test_list_with_trailing_slash_works(api: httpx.AsyncClient) -> None:
    response = await api.get(USERS_URL + "/", params={"limit": 1})
    assert response.status_code == 200 and len(response.json()["items"]) == 1


async def test_list_merges_users_of_every_shard(api: httpx.AsyncClient) -> None:
    router = runtime(api).router
    created = await create_many(api, 6)
    while {router.shard_for(i) for i in created} != set(router.shard_indexes):
        created += await create_many(api, 3)
    # Listings read the replicas and promise no read-your-writes (keyed reads do): the last
    # create could still be on its way there (seen once in a full run).
    wait_replicas_caught_up(router.topology)
    listed = await page_through(api, "asc", 100)
    assert set(created) <= set(listed)


async def test_paging_asc_and_desc_visits_each_user_once_in_order(api: httpx.AsyncClient) -> None:
    await create_many(api, 15)
    asc = await page_through(api, "asc", 7)
    desc = await page_through(api, "desc", 7)
    assert len(asc) == len(set(asc))
    assert asc == sorted(asc, key=uuid.UUID)
    assert desc == list(reversed(asc))


async def test_paging_while_users_are_inserted_never_repeats_or_skips(api: httpx.AsyncClient) -> None:
    await create_many(api, 10)
    before = set(await page_through(api, "asc", 100))
    inserted: list[str] = []

    async def insert_some() -> None:
        inserted.extend(await create_many(api, 3))

    seen = await page_through(api, "asc", 5, on_page=insert_some)
    assert len(seen) == len(set(seen)), "a user was served twice"
    assert before <= set(seen), "an existing user was skipped"
    assert seen == sorted(seen, key=uuid.UUID)


async def test_limit_bounds(api: httpx.AsyncClient) -> None:
    assert (await api.get(USERS_URL, params={"limit": 100})).status_code == 200
    for bad in ("0", "101", "-1", "ten"):
        response = await api.get(USERS_URL, params={"limit": bad})
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"]["field"] == "limit"


async def test_offset_is_refused_pointing_to_cursor(api: httpx.AsyncClient) -> None:
    response = await api.get(USERS_URL, params={"offset": 20})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "offset_not_supported" and "cursor" in error["message"]


async def test_bad_order_is_422(api: httpx.AsyncClient) -> None:
    response = await api.get(USERS_URL, params={"order": "random"})
    assert response.status_code == 422 and response.json()["error"]["details"]["field"] == "order"


async def test_tampered_cursor_is_refused(api: httpx.AsyncClient) -> None:
    await create_many(api, 3)
    cursor = (await api.get(USERS_URL, params={"limit": 1})).json()["next_cursor"]
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for bad in (flipped, "garbage", cursor + "x"):
        response = await api.get(USERS_URL, params={"cursor": bad})
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"]["field"] == "cursor"


async def test_cursor_of_one_order_is_refused_for_the_other(api: httpx.AsyncClient) -> None:
    await create_many(api, 3)
    cursor = (await api.get(USERS_URL, params={"limit": 1, "order": "asc"})).json()["next_cursor"]
    response = await api.get(USERS_URL, params={"cursor": cursor, "order": "desc"})
    assert response.status_code == 422


async def test_empty_parameters_mean_the_defaults(api: httpx.AsyncClient) -> None:
    await create_many(api, 21)
    response = await api.get(USERS_URL + "?limit=&cursor=&order=")
    assert response.status_code == 200
    assert len(response.json()["items"]) == 20
