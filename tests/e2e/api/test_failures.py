"""Stopped servers: what clients see, and that service resumes without restarting the app.

Each test runs its own app instance (fresh breakers and pools) and restarts what it stopped.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from messenger.settings import Settings
from tests.e2e.api.conftest import OPS, USERS_URL, running_app, runtime
from tests.support.waiting import wait_for_async

SERVICE_DEADLINE_S = 2.0


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as client:
        yield client


async def users_on_every_shard(api: httpx.AsyncClient) -> dict[int, dict]:
    router = runtime(api).router
    found: dict[int, dict] = {}
    while len(found) < len(router.shard_indexes):
        user = (await api.post(USERS_URL, json={"first_name": "Fail", "last_name": "Over"})).json()
        found.setdefault(router.shard_for(user["id"]), user)
    return found


def id_on_shard(api: httpx.AsyncClient, shard: int) -> str:
    router = runtime(api).router
    while True:
        candidate = str(uuid.uuid4())
        if router.shard_for(candidate) == shard:
            return candidate


async def test_replica_stopped_reads_still_work_and_ready_reports_it(
    app_client: httpx.AsyncClient, cluster: Any
) -> None:
    api = app_client
    users = await users_on_every_shard(api)
    shard = 1
    cluster.stop_server(shard, "replica")
    try:
        for _ in range(3):
            for user in users.values():
                response = await api.get(f"{USERS_URL}/{user['id']}")
                assert response.status_code == 200, response.text
        ready = await api.get("/ready")
        assert ready.status_code == 503
        detail = next(s for s in ready.json()["shards"] if s["index"] == shard)
        assert detail["replica"]["up"] is False and detail["primary"]["up"] is True
        listing = await api.get(USERS_URL, params={"limit": 5})
        assert listing.status_code == 200
        stats = (await api.get("/api/v1/shards/stats", headers=OPS)).json()
        assert next(s for s in stats["shards"] if s["index"] == shard)["replica_up"] is False
    finally:
        cluster.start_server(shard, "replica")

    await wait_until_ready(api)


async def test_primary_stopped_fails_its_writes_fast_keeps_its_reads_and_other_shards(
    app_client: httpx.AsyncClient, cluster: Any
) -> None:
    api = app_client
    users = await users_on_every_shard(api)
    shard = 2
    name = runtime(api).router.shard_name(shard)
    # Let the markers of those creates expire: reads of them must come from the replica.
    for user in users.values():
        await runtime(api).freshness.forget(user["id"])
    cluster.stop_server(shard, "primary")
    try:
        for _ in range(3):  # the first pays the timeout, the next ones meet an open breaker
            started = time.monotonic()
            response = await api.put(
                f"{USERS_URL}/{users[shard]['id']}", json={"first_name": "X", "last_name": "Y"}
            )
            assert time.monotonic() - started < SERVICE_DEADLINE_S
            assert response.status_code == 503
            error = response.json()["error"]
            assert error["code"] == "shard_unavailable" and error["details"]["shard"] == name
            assert name in error["message"] and response.headers["retry-after"]
        # Creates that land on the dead shard fail, creates elsewhere succeed.
        statuses: set[int] = set()
        for _ in range(100):  # ids are random: go on until both kinds of shard were hit
            created = await api.post(USERS_URL, json={"first_name": "During", "last_name": "Outage"})
            statuses.add(created.status_code)
            if statuses == {201, 503}:
                break
        assert statuses == {201, 503}
        # Its reads come from the replica; every other shard works as usual.
        got = await api.get(f"{USERS_URL}/{users[shard]['id']}")
        assert got.status_code == 200 and got.json() == users[shard]
        for other, user in users.items():
            if other != shard:
                url = f"{USERS_URL}/{user['id']}"
                assert (await api.patch(url, json={"last_name": "Fine"})).status_code == 200
                assert (await api.get(url)).json()["last_name"] == "Fine"
        ready = await api.get("/ready")
        assert ready.status_code == 503
        assert next(s for s in ready.json()["shards"] if s["index"] == shard)["primary"]["up"] is False
    finally:
        cluster.start_server(shard, "primary")

    async def writes_again() -> bool:
        response = await api.patch(f"{USERS_URL}/{users[shard]['id']}", json={"last_name": "Back"})
        return response.status_code == 200

    await wait_for_async(writes_again, 20, "writes to the restarted primary")
    assert (await api.get(f"{USERS_URL}/{users[shard]['id']}")).json()["last_name"] == "Back"
    await wait_until_ready(api)


async def test_listing_with_a_shard_unreachable_is_503_naming_it(
    app_client: httpx.AsyncClient, cluster: Any
) -> None:
    api = app_client
    await users_on_every_shard(api)
    shard = 0
    name = runtime(api).router.shard_name(shard)
    cluster.stop_server(shard, "pgbouncer")  # neither its primary nor its replica can be reached
    try:
        started = time.monotonic()
        response = await api.get(USERS_URL, params={"limit": 100})
        assert time.monotonic() - started < 2 * SERVICE_DEADLINE_S
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["details"]["shard"] == name
        assert error["details"]["unavailable_shards"] == [name]
        missing = await api.get(f"{USERS_URL}/{id_on_shard(api, shard)}")
        assert missing.status_code == 503
    finally:
        cluster.start_server(shard, "pgbouncer")

    async def lists_again() -> bool:
        return (await api.get(USERS_URL, params={"limit": 100})).status_code == 200

    await wait_for_async(lists_again, 20, "listing to work again")
    await wait_until_ready(api)


async def test_many_concurrent_requests_on_a_dead_shard_all_end_within_the_deadline(
    app_client: httpx.AsyncClient, cluster: Any
) -> None:
    api = app_client
    shard = 1
    cluster.stop_server(shard, "primary")
    try:
        started = time.monotonic()
        responses = await asyncio.gather(*(
            api.delete(f"{USERS_URL}/{id_on_shard(api, shard)}") for _ in range(30)
        ))
        assert time.monotonic() - started < SERVICE_DEADLINE_S
        assert {r.status_code for r in responses} == {503}
    finally:
        cluster.start_server(shard, "primary")
    await wait_until_ready(api)


async def wait_until_ready(api: httpx.AsyncClient) -> None:
    """Leave the cluster as the next test expects it: everything reachable through PgBouncer."""

    async def ready() -> bool:
        return (await api.get("/ready")).status_code == 200

    await wait_for_async(ready, 20, "/ready to report every shard up again")

