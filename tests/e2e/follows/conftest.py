"""Follows over a cluster of their own: the session's servers, fresh databases (so that
`messenger check references` must find the whole cluster clean, not only this test's rows),
the API running in-process over them, and the relay driven by the test when it wants to."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest

from messenger.cluster.local import LocalCluster
from messenger.settings import Settings
from messenger.storage.audit.runner import AuditReport
from messenger.storage.migrator import migrate
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import Topology
from tests.e2e.api.conftest import running_app, runtime
from tests.support.scratch import scratch_topology

USERS_URL = "/api/v1/users"


@pytest.fixture(scope="module")
def rel_topology(cluster: LocalCluster) -> Iterator[Topology]:
    with scratch_topology(cluster.topology) as topology:
        assert all(o.ok for o in migrate(topology))
        yield topology


@pytest.fixture(scope="module")
def rel_settings(cluster: LocalCluster, rel_topology: Topology) -> Settings:
    base = Settings.from_env(cluster.topology_path, workers=1)
    # The test drives the relay itself (`relay` below), so faults happen when it says.
    # Every in-process request comes from 127.0.0.1: per-address limits would add up over the
    # module (as in tests/e2e/api/conftest.py).
    return replace(base, topology=rel_topology, open_users=True, run_background=False,
                   registrations_per_client=1_000_000, login_attempts_per_client=1_000_000)


@pytest.fixture(scope="module")
async def rel_app(rel_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(rel_settings) as client:
        yield client


@pytest.fixture
async def rel_api(rel_app: httpx.AsyncClient) -> httpx.AsyncClient:
    """The module's app with its view of the shards brought up to date (a test before may
    have stopped a server, leaving breakers open that only the monitor closes)."""
    router = runtime(rel_app).router
    await asyncio.gather(*(router.check_shard(s) for s in router.shard_indexes))
    return rel_app


@pytest.fixture
async def pools(rel_topology: Topology) -> AsyncIterator[PrimaryPools]:
    async with PrimaryPools(rel_topology) as pools:
        yield pools


@pytest.fixture
def relay(pools: PrimaryPools) -> OutboxRelay:
    return OutboxRelay(pools, HANDLERS, apply_timeout_s=3)


async def new_user(api: httpx.AsyncClient, first: str = "Ada", *, shard: int | None = None) -> str:
    """A profile-only user (open users), on `shard` if given."""
    router = runtime(api).router
    while True:
        response = await api.post(USERS_URL, json={"first_name": first, "last_name": "Test"})
        assert response.status_code == 201, response.text
        user_id: str = response.json()["id"]
        if shard is None or router.shard_for(user_id) == shard:
            return user_id
        await api.delete(f"{USERS_URL}/{user_id}")


def bearer(api: httpx.AsyncClient, user_id: str) -> dict[str, str]:
    token = runtime(api).api.tokens.issue_access(uuid.UUID(user_id), uuid.uuid4())
    return {"Authorization": f"Bearer {token}"}


async def follow(api: httpx.AsyncClient, follower: str, followee: str) -> httpx.Response:
    return await api.put(f"{USERS_URL}/{followee}/follow", headers=bearer(api, follower))


def count_rows(topology: Topology, sql: str, params: tuple[Any, ...] = ()) -> int:
    """A count summed over every shard's primary."""
    total = 0
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            total += row[0]
    return total


def skip_backoff(topology: Topology) -> None:
    """Make every waiting event due now (a test need not sit out the retry backoff)."""
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            conn.execute("UPDATE outbox SET next_attempt_at = now() WHERE delivered_at IS NULL")


def assert_clean(report: AuditReport) -> None:
    problems = {
        (k.kind, s.shard): (dict(s.problems), s.samples, s.error)
        for k in report.kinds for s in k.shards if s.found or s.error
    }
    assert report.ok, f"audit found problems: {problems}; relay {report.relay}"
