"""Fixtures for API tests: the app running in-process (lifespan included) over the session's
throwaway cluster, and direct access to its servers to check what was really written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest

from messenger.bootstrap import Runtime, create_app, runtime_of
from messenger.settings import Settings
from messenger.topology import Topology
from tests.support.waiting import wait_for

USERS_URL = "/api/v1/users"
OPS_TOKEN = "ops-" + uuid.uuid4().hex
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
"""The session app's operator credential (/metrics, /api/v1/shards/stats, /api/v1/ops/cluster)."""


@pytest.fixture(scope="session")
def topology(cluster: Any) -> Topology:
    return cluster.topology  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def settings(cluster: Any) -> Settings:
    # Open users: most users tests create profile-only users, as the seed's clients do. Every
    # in-process request comes from 127.0.0.1, so the per-address limits would add up over the
    # session: tests of those limits set them (and clear their buckets) themselves.
    return replace(
        Settings.from_env(cluster.topology_path, workers=1), open_users=True,
        registrations_per_client=1_000_000, login_attempts_per_client=1_000_000, ops_token=OPS_TOKEN,
    )


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for a fresh app instance whose lifespan (pools, Redis, monitors) is running."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def runtime(client: httpx.AsyncClient) -> Runtime:
    """What the app behind `client` built (router, markers, services), for tests to look at."""
    return runtime_of(client.app)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def session_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as client:
        yield client


@pytest.fixture
async def api(session_api: httpx.AsyncClient) -> httpx.AsyncClient:
    """The session's app, with its view of the shards brought up to date first: its replica
    monitors only run while the event loop does, and synchronous tests (or tests that stopped
    servers) may have left it stale."""
    router = runtime(session_api).router
    await asyncio.gather(*(router.check_shard(s) for s in router.shard_indexes))
    return session_api


def unique_name() -> str:
    """A name no other test writes, to find (or not find) this test's rows."""
    return f"t{uuid.uuid4().hex[:16]}"


def rows_with_name(topology: Topology, name: str) -> int:
    """Users whose first or last name is `name`, counted on every shard's primary."""
    total = 0
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM users WHERE first_name = %s OR last_name = %s", (name, name)
            ).fetchone()
            assert row is not None
            total += row[0]
    return total


def replica_has_user(topology: Topology, shard: int, user_id: str) -> bool:
    with psycopg.connect(topology.shard(shard).replica_dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is not None


def set_replica_delay(topology: Topology, delay: str | None) -> None:
    for shard in topology.shards:
        with psycopg.connect(shard.replica_dsn, autocommit=True) as conn:
            if delay is None:
                conn.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
            else:
                conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
            conn.execute("SELECT pg_reload_conf()")


def wait_replicas_caught_up(topology: Topology, deadline_s: float = 15.0) -> None:
    """Block until every replica has replayed everything its primary had written."""
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as primary:
            target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        with psycopg.connect(shard.replica_dsn, autocommit=True) as replica:
            wait_for(
                lambda target=target: replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()[0],  # type: ignore[index]
                deadline_s,
                f"{shard.name} replica to catch up",
            )


@contextmanager
def lagging_replicas(topology: Topology, delay: str = "2s") -> Iterator[None]:
    """Every replica applies WAL `delay` late (recovery_min_apply_delay), reset afterwards."""
    set_replica_delay(topology, delay)
    try:
        yield
    finally:
        set_replica_delay(topology, None)
        wait_replicas_caught_up(topology)


def with_redis_url(settings: Settings, url: str) -> Settings:
    return replace(settings, topology=replace(settings.topology, redis_url=url))
