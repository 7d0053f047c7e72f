"""Overload: more concurrent requests than pooled connections queue and succeed; a dead
shard still fails its own requests fast while the others keep serving."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from messenger.settings import Settings
from tests.e2e.api.conftest import USERS_URL, running_app, runtime
from tests.e2e.api.test_failures import id_on_shard, users_on_every_shard
from tests.support.waiting import wait_for_async


async def test_a_burst_larger_than_the_pools_queues_and_succeeds(settings: Settings) -> None:
    # One connection per (shard, role), every one of them held for longer than the deadline
    # while the burst arrives: before, the wait for a connection counted against the deadline
    # and the burst turned into 503s that also opened the breakers. Holding the permits makes
    # the wait certain rather than dependent on how fast this machine drains a burst.
    tight = replace(settings, pool_max_size=1, primary_timeout=1.0, replica_timeout=1.0)
    async with running_app(tight) as api:
        users = list((await users_on_every_shard(api)).values())
        router = runtime(api).router
        endpoints = [
            router.endpoint(shard, role)
            for shard in router.shard_indexes
            for role in ("primary", "replica")
        ]
        for endpoint in endpoints:
            await endpoint.capacity.acquire(5.0)
        creates = [
            api.post(USERS_URL, json={"first_name": "Burst", "last_name": str(n)}) for n in range(30)
        ]
        reads = [api.get(f"{USERS_URL}/{users[n % len(users)]['id']}") for n in range(60)]
        burst = asyncio.gather(*creates, *reads)

        async def release_later() -> None:
            await asyncio.sleep(2 * tight.primary_timeout)
            for endpoint in endpoints:
                endpoint.capacity.release()

        responses, _ = await asyncio.gather(burst, release_later())
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 30 and statuses.count(200) == 60, sorted(set(statuses))
        for shard in router.shard_indexes:
            assert not router.breaker_open(shard, "primary")
            assert not router.breaker_open(shard, "replica")


async def test_a_dead_shard_fails_its_queued_requests_fast_and_others_serve(
    settings: Settings, cluster: Any
) -> None:
    async with running_app(replace(settings, pool_max_size=2)) as api:
        users = await users_on_every_shard(api)
        dead = 1
        name = runtime(api).router.shard_name(dead)
        cluster.stop_server(dead, "primary")
        try:
            started = time.monotonic()
            doomed = [api.delete(f"{USERS_URL}/{id_on_shard(api, dead)}") for _ in range(40)]
            healthy = [
                api.get(f"{USERS_URL}/{user['id']}")
                for shard, user in users.items()
                if shard != dead
                for _ in range(20)
            ]
            responses = await asyncio.gather(*doomed, *healthy)
            assert time.monotonic() - started < 2.0
            failed, served = responses[: len(doomed)], responses[len(doomed) :]
            assert {r.status_code for r in failed} == {503}
            assert {r.json()["error"]["details"]["shard"] for r in failed} == {name}
            assert {r.status_code for r in served} == {200}
        finally:
            cluster.start_server(dead, "primary")

        async def ready() -> bool:
            return (await api.get("/ready")).status_code == 200

        await wait_for_async(ready, 20, "/ready to report every shard up again")
