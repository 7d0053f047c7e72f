"""What the web pages need from the API: finding a person by username, the operator's cluster
snapshot behind the ops token, and pages whose every file comes from this server."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from messenger.settings import Settings
from messenger.topology import Topology
from tests.e2e.api.conftest import OPS, running_app

PASSWORD = "s3cret-pass"
LOOKUP = "/api/v1/users/by-username/{}"
CLUSTER = "/api/v1/ops/cluster"


async def _account(api: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    name = f"w{uuid.uuid4().hex[:12]}"
    created = await api.post("/api/v1/accounts", json={
        "username": name, "email": f"{name}@example.com", "password": PASSWORD,
        "first_name": "Grace", "last_name": "Hopper"})
    assert created.status_code == 201, created.text
    tokens = (await api.post("/api/v1/auth/login", json={"login": name, "password": PASSWORD})).json()
    return created.json(), {"Authorization": f"Bearer {tokens['access_token']}"}


OPS_ENDPOINTS = [CLUSTER, "/api/v1/shards/stats", "/metrics"]


@pytest.fixture
async def ops_api(api: httpx.AsyncClient) -> httpx.AsyncClient:
    return api  # the session's app has an ops token (tests/e2e/api/conftest.py)


@pytest.fixture(scope="module")
async def no_ops_token_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(replace(settings, ops_token="")) as client:
        yield client


# -- finding a person by username -----------------------------------------------------------

async def test_a_username_in_any_case_finds_its_user_without_the_email(api: httpx.AsyncClient) -> None:
    grace, _ = await _account(api)
    _, caller = await _account(api)
    response = await api.get(LOOKUP.format(grace["account"]["username"].upper()), headers=caller)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": grace["id"], "username": grace["account"]["username"],
                               "first_name": "Grace", "last_name": "Hopper"}
    assert "email" not in response.text and response.headers["cache-control"] == "private, no-store"


async def test_an_unknown_or_impossible_username_is_not_found(api: httpx.AsyncClient) -> None:
    _, caller = await _account(api)
    for name in (f"nobody{uuid.uuid4().hex[:8]}", "no", "Not A Name!"):
        response = await api.get(LOOKUP.format(name), headers=caller)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"


async def test_looking_up_a_username_needs_an_access_token(api: httpx.AsyncClient) -> None:
    grace, _ = await _account(api)
    response = await api.get(LOOKUP.format(grace["account"]["username"]))
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"


async def test_a_renamed_user_is_found_by_the_new_name_only(api: httpx.AsyncClient) -> None:
    grace, headers = await _account(api)
    old = grace["account"]["username"]
    new = f"r{uuid.uuid4().hex[:12]}"
    assert (await api.patch("/api/v1/me", json={"username": new}, headers=headers)).status_code == 200
    assert (await api.get(LOOKUP.format(new), headers=headers)).json()["id"] == grace["id"]
    assert (await api.get(LOOKUP.format(old), headers=headers)).status_code == 404


async def test_the_lookup_is_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    operation = doc["paths"]["/api/v1/users/by-username/{username}"]["get"]
    assert operation["security"] == [{"bearer": []}] and {"200", "401", "404"} <= set(operation["responses"])
    assert "UserByUsernameOut" in doc["components"]["schemas"]


# -- the operator's cluster snapshot --------------------------------------------------------

@pytest.mark.parametrize("path", OPS_ENDPOINTS)
async def test_ops_endpoints_refuse_a_missing_or_wrong_ops_token_with_a_json_401(
    ops_api: httpx.AsyncClient, path: str
) -> None:
    _, user = await _account(ops_api)  # a user's access token is not the ops credential
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic eDp5"}, user):
        response = await ops_api.get(path, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == "unauthenticated"
        assert "http_requests_total" not in response.text and "shards" not in response.json()


@pytest.mark.parametrize("path", OPS_ENDPOINTS)
async def test_ops_endpoints_are_off_when_no_ops_token_is_configured(
    no_ops_token_api: httpx.AsyncClient, path: str
) -> None:
    assert (await no_ops_token_api.get(path)).status_code == 401
    response = await no_ops_token_api.get(path, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403 and "MESSENGER_OPS_TOKEN" in response.json()["error"]["message"]


async def test_metrics_and_shard_stats_answer_the_ops_token(ops_api: httpx.AsyncClient) -> None:
    metrics = await ops_api.get("/metrics", headers=OPS)
    assert metrics.status_code == 200 and "http_requests_total" in metrics.text
    stats = await ops_api.get("/api/v1/shards/stats", headers=OPS)
    assert stats.status_code == 200 and stats.json()["shards"]


async def test_the_openapi_document_puts_ops_endpoints_behind_the_ops_token(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["ops"]["scheme"] == "bearer"
    for path in OPS_ENDPOINTS:
        operation = doc["paths"][path]["get"]
        assert operation["security"] == [{"ops": []}] and {"200", "401", "403"} <= set(operation["responses"])
    assert "security" not in doc["paths"]["/ready"]["get"]  # probes stay open


async def test_the_cluster_snapshot_shows_every_shard(ops_api: httpx.AsyncClient, topology: Topology) -> None:
    response = await ops_api.get(CLUSTER, headers=OPS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["epoch"] == topology.epoch and body["resharding"] is None
    assert [s["shard"] for s in body["shards"]] == [s.name for s in topology.shards]
    for shard in body["shards"]:
        for role in ("primary", "replica"):
            assert shard[role]["listening"] is True and shard[role]["serving"] is True
            assert shard[role]["client_connections"] >= 1  # our own pools' connections at least
        assert shard["pgbouncer"]["listening"] is True
        assert shard["users"] is not None and shard["relay"]["dead_letters"] >= 0
        assert 0 < shard["ring_share"] < 1
    assert sum(s["users"] for s in body["shards"]) == body["total_users"]
    assert abs(sum(s["ring_share"] for s in body["shards"]) - 1) < 1e-9


# -- pages ------------------------------------------------------------------------------------

_EXTERNAL = re.compile(r"""(?:src|href)=["'](?:https?:)?//""")


@pytest.mark.parametrize("path", ["/", "/c/0190f3a0-0000-7000-8000-000000000000", "/cluster"])
async def test_pages_load_only_files_of_this_server(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert not _EXTERNAL.search(response.text)
    for asset in re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", response.text):
        assert (await api.get(asset)).status_code == 200, asset


async def test_docs_serve_swagger_ui_from_the_installed_package(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs")
    assert "cdn" not in page.text and not _EXTERNAL.search(page.text)
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/static/docs.js"):
        response = await api.get(asset)
        assert response.status_code == 200 and len(response.content) > 50, asset


async def test_an_unknown_static_file_is_a_json_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/static/nope.js")
    assert response.status_code == 404 and response.json()["error"]["code"] == "route_not_found"
