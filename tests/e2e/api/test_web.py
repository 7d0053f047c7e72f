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
from tests.e2e.api.conftest import running_app

PASSWORD = "s3cret-pass"
OPS_TOKEN = "ops-" + uuid.uuid4().hex
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


@pytest.fixture(scope="module")
async def ops_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(replace(settings, ops_token=OPS_TOKEN)) as client:
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

async def test_the_cluster_snapshot_refuses_without_the_ops_token(ops_api: httpx.AsyncClient) -> None:
    assert (await ops_api.get(CLUSTER)).status_code == 401
    wrong = await ops_api.get(CLUSTER, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"
    _, user = await _account(ops_api)  # a user's access token is not the ops credential
    assert (await ops_api.get(CLUSTER, headers=user)).status_code == 401


async def test_the_cluster_snapshot_is_off_when_no_ops_token_is_configured(api: httpx.AsyncClient) -> None:
    response = await api.get(CLUSTER, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403 and "MESSENGER_OPS_TOKEN" in response.json()["error"]["message"]


async def test_the_cluster_snapshot_shows_every_shard(ops_api: httpx.AsyncClient, topology: Topology) -> None:
    response = await ops_api.get(CLUSTER, headers={"Authorization": f"Bearer {OPS_TOKEN}"})
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


async def test_existing_ops_endpoints_stay_open(ops_api: httpx.AsyncClient) -> None:
    assert (await ops_api.get("/api/v1/shards/stats")).status_code == 200


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
