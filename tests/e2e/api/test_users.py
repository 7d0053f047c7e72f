"""The users endpoints, in-process against the throwaway cluster."""

from __future__ import annotations

import uuid

import httpx
import pytest

from messenger.domain.ids import id_timestamp_ms
from tests.e2e.api.conftest import OPS, USERS_URL, runtime, unique_name


async def create(api: httpx.AsyncClient, first: str = "Ada", last: str = "Lovelace") -> dict:
    response = await api.post(USERS_URL, json={"first_name": first, "last_name": last})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_returns_201_the_user_and_its_location(api: httpx.AsyncClient) -> None:
    response = await api.post(USERS_URL, json={"first_name": "Ada", "last_name": "Lovelace"})
    assert response.status_code == 201
    body = response.json()
    assert body["first_name"] == "Ada" and body["last_name"] == "Lovelace"
    assert response.headers["location"] == f"{USERS_URL}/{body['id']}"
    assert body["created_at"] == body["updated_at"]


async def test_create_generates_a_uuidv7_id(api: httpx.AsyncClient) -> None:
    user = await create(api)
    parsed = uuid.UUID(user["id"])
    assert parsed.version == 7
    assert id_timestamp_ms(parsed) > 0


async def test_create_with_trailing_slash_works_without_redirect(api: httpx.AsyncClient) -> None:
    response = await api.post(USERS_URL + "/", json={"first_name": "Grace", "last_name": "Hopper"})
    assert response.status_code == 201
    assert response.json()["first_name"] == "Grace"


async def test_create_trims_names(api: httpx.AsyncClient) -> None:
    user = await create(api, "  Alan ", "\tTuring\n")
    assert (user["first_name"], user["last_name"]) == ("Alan", "Turing")


async def test_create_accepts_unicode_names_up_to_the_limit(api: httpx.AsyncClient) -> None:
    user = await create(api, "Zoë" * 33 + "x", "山田")
    assert len(user["first_name"]) == 100 and user["last_name"] == "山田"


async def test_get_returns_the_created_user(api: httpx.AsyncClient) -> None:
    user = await create(api)
    response = await api.get(f"{USERS_URL}/{user['id']}")
    assert response.status_code == 200
    assert response.json() == user


async def test_get_unknown_id_is_404_in_the_error_shape(api: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    response = await api.get(f"{USERS_URL}/{missing}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["details"] == {"id": str(missing)}


async def test_get_malformed_id_is_400(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{USERS_URL}/not-a-uuid")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_id"


async def test_put_replaces_both_names_and_bumps_updated_at(api: httpx.AsyncClient) -> None:
    user = await create(api)
    response = await api.put(
        f"{USERS_URL}/{user['id']}", json={"first_name": "Ada", "last_name": "King"}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["first_name"], body["last_name"]) == ("Ada", "King")
    assert body["created_at"] == user["created_at"] and body["updated_at"] > user["updated_at"]
    assert (await api.get(f"{USERS_URL}/{user['id']}")).json() == body


async def test_put_requires_both_names(api: httpx.AsyncClient) -> None:
    user = await create(api)
    response = await api.put(f"{USERS_URL}/{user['id']}", json={"first_name": "Only"})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "last_name"


async def test_patch_changes_only_the_given_name(api: httpx.AsyncClient) -> None:
    user = await create(api, "Ada", "Lovelace")
    response = await api.patch(f"{USERS_URL}/{user['id']}", json={"last_name": "Byron"})
    assert response.status_code == 200
    assert (response.json()["first_name"], response.json()["last_name"]) == ("Ada", "Byron")
    got = (await api.get(f"{USERS_URL}/{user['id']}")).json()
    assert (got["first_name"], got["last_name"]) == ("Ada", "Byron")


async def test_patch_with_no_field_is_422(api: httpx.AsyncClient) -> None:
    user = await create(api)
    response = await api.patch(f"{USERS_URL}/{user['id']}", json={})
    assert response.status_code == 422


async def test_patch_with_null_name_is_422(api: httpx.AsyncClient) -> None:
    user = await create(api)
    response = await api.patch(f"{USERS_URL}/{user['id']}", json={"first_name": None})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "first_name"


async def test_put_patch_delete_of_unknown_id_are_404(api: httpx.AsyncClient) -> None:
    url = f"{USERS_URL}/{uuid.uuid4()}"
    name = unique_name()
    assert (await api.put(url, json={"first_name": name, "last_name": "x"})).status_code == 404
    assert (await api.patch(url, json={"first_name": name})).status_code == 404
    assert (await api.delete(url)).status_code == 404


async def test_delete_returns_204_then_get_is_404(api: httpx.AsyncClient) -> None:
    user = await create(api)
    url = f"{USERS_URL}/{user['id']}"
    response = await api.delete(url)
    assert response.status_code == 204 and response.content == b""
    assert (await api.get(url)).status_code == 404
    assert (await api.delete(url)).status_code == 404


async def test_writes_return_a_consistency_token(api: httpx.AsyncClient) -> None:
    response = await api.post(USERS_URL, json={"first_name": "T", "last_name": "K"})
    token = response.headers["x-consistency-token"]
    epoch, shard, lsn = token.split(".")
    assert epoch.isdigit() and shard.isdigit() and int(lsn, 16) > 0
    got = await api.get(response.headers["location"], headers={"X-Consistency-Token": token})
    assert got.status_code == 200


async def test_a_garbage_consistency_token_is_ignored(api: httpx.AsyncClient) -> None:
    user = await create(api)
    got = await api.get(f"{USERS_URL}/{user['id']}", headers={"X-Consistency-Token": "x.y.z"})
    assert got.status_code == 200


async def test_head_of_a_user_has_no_body(api: httpx.AsyncClient) -> None:
    user = await create(api)
    response = await api.head(f"{USERS_URL}/{user['id']}")
    assert response.status_code == 200 and response.content == b""


async def test_get_by_id_is_counted_under_its_route_template(api: httpx.AsyncClient) -> None:
    # GET by id is served in front of Starlette (api/app.py MessengerApp): its metrics
    # must still carry the route template, not the raw path or "unmatched".
    user = await create(api)
    assert (await api.get(f"{USERS_URL}/{user['id']}")).status_code == 200
    assert (await api.get(f"{USERS_URL}/{uuid.uuid4()}")).status_code == 404
    text = (await api.get("/metrics", headers=OPS)).text
    assert 'http_requests_total{method="GET",route="/api/v1/users/{user_id}",status="200"}' in text
    assert 'http_requests_total{method="GET",route="/api/v1/users/{user_id}",status="404"}' in text


async def test_get_by_id_answers_the_consistency_token_like_any_read(api: httpx.AsyncClient) -> None:
    response = await api.post(USERS_URL, json={"first_name": "Tok", "last_name": "En"})
    token = response.headers["x-consistency-token"]
    got = await api.get(response.headers["location"], headers={"X-Consistency-Token": token})
    assert got.status_code == 200 and got.json()["id"] == response.json()["id"]
    assert got.headers["content-type"] == "application/json"


async def test_an_unexpected_error_in_a_get_by_id_is_a_500_in_the_error_shape(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runtime(api).api.users, "get", broken)
    response = await api.get(f"{USERS_URL}/{uuid.uuid4()}")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error; it has been logged", "details": {}}}
