"""Health, readiness, stats, metrics and the API description."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import httpx
import pytest

from messenger.bootstrap import create_app
from messenger.settings import Settings
from messenger.storage.schema import SchemaDrift
from messenger.topology import Topology
from tests.e2e.api.conftest import OPS, USERS_URL
from tests.support.scratch import scratch_topology


async def test_health_is_ok(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_ready_when_every_shard_is_up_and_at_head(
    api: httpx.AsyncClient, topology: Topology
) -> None:
    response = await api.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["schema_version"]
    assert [s["shard"] for s in body["shards"]] == [s.name for s in topology.shards]
    assert all(s["schema_version"] == body["schema_version"] for s in body["shards"])


async def test_stats_report_counts_shares_health_lag_and_pools(api: httpx.AsyncClient) -> None:
    await api.post(USERS_URL, json={"first_name": "Stat", "last_name": "S"})
    body = (await api.get("/api/v1/shards/stats", headers=OPS)).json()
    shards = body["shards"]
    assert body["total_users"] == sum(s["users"] for s in shards) > 0
    assert sum(s["share"] for s in shards) == pytest.approx(1.0)
    assert sum(s["ring_share"] for s in shards) == pytest.approx(1.0)
    for s in shards:
        assert s["primary_up"] and s["replica_up"]
        assert s["replication_lag_seconds"] is not None
        assert set(s["pool"]) == {"primary", "replica"}
        assert set(s["pool"]["primary"]) == {"in_use", "idle", "waiting"}


async def test_metrics_expose_requests_latency_queries_and_pools(api: httpx.AsyncClient) -> None:
    created = await api.post(USERS_URL, json={"first_name": "Met", "last_name": "Rics"})
    await api.get(created.headers["location"])
    text = (await api.get("/metrics", headers=OPS)).text
    assert 'http_requests_total{method="POST",route="/api/v1/users",status="201"}' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/v1/users/{user_id}"}' in text
    # The start-up health check probed every primary; each statement is labelled by its name.
    assert 'db_query_duration_seconds_count{query="monitor_primary",role="primary",shard="shard_0"}' in text
    assert re.search(r'db_query_duration_seconds_count\{query="add_user",role="primary",shard="shard_\d+"\}', text)
    assert re.search(r'db_query_duration_seconds_count\{query="get_user",role="(primary|replica)",shard="shard_\d+"\}', text)
    assert "db_pool_connections{" in text
    assert "db_reads_total{" in text


async def test_unknown_routes_are_counted_under_one_label(api: httpx.AsyncClient) -> None:
    await api.get("/no/such/route/123")
    text = (await api.get("/metrics", headers=OPS)).text
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/route" not in text


async def test_openapi_describes_every_users_operation(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]["/api/v1/users"]) == {"get", "post"}
    assert set(doc["paths"]["/api/v1/users/{user_id}"]) == {"get", "put", "patch", "delete"}
    schemas = doc["components"]["schemas"]
    assert {"UserCreate", "UserPatch", "UserOut", "UserPage", "ErrorBody"} <= set(schemas)
    assert schemas["UserCreate"]["required"] == ["first_name", "last_name"]


async def test_docs_page_loads_the_openapi_document(api: httpx.AsyncClient) -> None:
    response = await api.get("/docs")
    assert response.status_code == 200 and "/openapi.json" in response.text


async def test_app_refuses_to_start_on_schema_drift(cluster: Any, settings: Settings) -> None:
    with scratch_topology(cluster.topology) as empty:
        app = create_app(replace(settings, topology=empty))
        with pytest.raises(SchemaDrift, match="messenger migrate up"):
            async with app.router.lifespan_context(app):
                pass
