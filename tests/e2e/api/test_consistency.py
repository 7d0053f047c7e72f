"""Read-your-writes for a client that sends nothing special, with replicas lagging on purpose."""

from __future__ import annotations

from dataclasses import replace

import httpx

from messenger.settings import Settings
from messenger.topology import Topology
from tests.e2e.api.conftest import (
    USERS_URL,
    lagging_replicas,
    replica_has_user,
    running_app,
    runtime,
    with_redis_url,
)


async def test_create_then_get_reads_own_write_with_lagging_replica(
    api: httpx.AsyncClient, topology: Topology
) -> None:
    with lagging_replicas(topology):
        for _ in range(3):
            created = await api.post(USERS_URL, json={"first_name": "Lag", "last_name": "Create"})
            user = created.json()
            shard = runtime(api).router.shard_for(user["id"])
            # The replica really is behind: without the mechanism this read would 404.
            assert not replica_has_user(topology, shard, user["id"])
            got = await api.get(created.headers["location"])
            assert got.status_code == 200 and got.json() == user


async def test_update_then_get_reads_own_write_with_lagging_replica(
    api: httpx.AsyncClient, topology: Topology
) -> None:
    user = (await api.post(USERS_URL, json={"first_name": "Old", "last_name": "Name"})).json()
    url = f"{USERS_URL}/{user['id']}"
    with lagging_replicas(topology):
        put = await api.put(url, json={"first_name": "New", "last_name": "Name"})
        assert (await api.get(url)).json() == put.json()
        patched = await api.patch(url, json={"last_name": "Patched"})
        assert (await api.get(url)).json() == patched.json()


async def test_delete_then_get_is_404_with_lagging_replica(
    api: httpx.AsyncClient, topology: Topology
) -> None:
    user = (await api.post(USERS_URL, json={"first_name": "Gone", "last_name": "Soon"})).json()
    url = f"{USERS_URL}/{user['id']}"
    assert (await api.get(url)).status_code == 200
    with lagging_replicas(topology):
        assert (await api.delete(url)).status_code == 204
        assert (await api.get(url)).status_code == 404


async def test_lagging_replica_still_serves_reads_of_keys_not_written(
    settings: Settings, topology: Topology
) -> None:
    # A lag bound no load on this machine can reach: this is about markers, not the bound.
    async with running_app(replace(settings, max_replica_lag_s=60.0)) as api:
        user = (await api.post(USERS_URL, json={"first_name": "Old", "last_name": "Row"})).json()
        url = f"{USERS_URL}/{user['id']}"
        router = runtime(api).router
        shard_name = router.shard_name(router.shard_for(user["id"]))
        # Let the marker of that write expire, so the read has no reason to go to the primary.
        await runtime(api).freshness.forget(user["id"])
        with lagging_replicas(topology):
            metrics = runtime(api).metrics
            plain = metrics.read_routing.labels(shard_name, "replica", "plain")
            before = plain._value.get()
            assert (await api.get(url)).status_code == 200
            assert plain._value.get() == before + 1


async def test_reads_stay_fresh_when_redis_is_unreachable(
    settings: Settings, topology: Topology
) -> None:
    async with running_app(with_redis_url(settings, "redis://127.0.0.1:1/0")) as api:
        with lagging_replicas(topology):
            created = await api.post(USERS_URL, json={"first_name": "No", "last_name": "Redis"})
            assert created.status_code == 201
            got = await api.get(created.headers["location"])
            assert got.status_code == 200 and got.json() == created.json()
            ready = (await api.get("/ready")).json()
            assert ready["redis"] == {"up": False}
