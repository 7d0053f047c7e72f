"""Every kind of bad request gets the one JSON error shape, the right status, and writes nothing."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from messenger.topology import Topology
from tests.e2e.api.conftest import USERS_URL, rows_with_name, unique_name


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]  # type: ignore[no-any-return]


BAD_BODIES = [
    # (description, body bytes with NAME as placeholder, content type, status, field)
    ("malformed json", b'{"first_name": "NAME", "last_name": ', "application/json", 400, None),
    ("not an object", b'["NAME", "x"]', "application/json", 422, None),
    ("first_name wrong type", b'{"first_name": 5, "last_name": "NAME"}', "application/json", 422, "first_name"),
    ("last_name wrong type", b'{"first_name": "NAME", "last_name": ["x"]}', "application/json", 422, "last_name"),
    ("unknown field", b'{"first_name": "NAME", "last_name": "x", "admin": true}', "application/json", 422, "admin"),
    ("missing last_name", b'{"first_name": "NAME"}', "application/json", 422, "last_name"),
    ("empty first_name", b'{"first_name": "", "last_name": "NAME"}', "application/json", 422, "first_name"),
    ("blank last_name", b'{"first_name": "NAME", "last_name": "   "}', "application/json", 422, "last_name"),
    ("over-long first_name", b'{"first_name": "NAME' + b"x" * 101 + b'", "last_name": "x"}', "application/json", 422, "first_name"),
    ("null name", b'{"first_name": null, "last_name": "NAME"}', "application/json", 422, "first_name"),
    ("NUL in a name", b'{"first_name": "NAME\\u0000", "last_name": "x"}', "application/json", 422, "first_name"),
    ("form content type", b"first_name=NAME&last_name=x", "application/x-www-form-urlencoded", 415, None),
    ("text content type", b'{"first_name": "NAME", "last_name": "x"}', "text/plain", 415, None),
]


@pytest.mark.parametrize(("case", "body", "content_type", "status", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_create_body_is_refused_and_writes_nothing(
    api: httpx.AsyncClient, topology: Topology,
    case: str, body: bytes, content_type: str, status: int, field: str | None,
) -> None:
    name = unique_name()
    response = await api.post(
        USERS_URL, content=body.replace(b"NAME", name.encode()), headers={"content-type": content_type}
    )
    error = assert_error_shape(response, status)
    if field is not None:
        assert error["details"].get("field") == field, error
    assert rows_with_name(topology, name) == 0


async def test_missing_content_type_is_415_and_writes_nothing(
    api: httpx.AsyncClient, topology: Topology
) -> None:
    name = unique_name()
    request = api.build_request("POST", USERS_URL, content=json.dumps({"first_name": name, "last_name": "x"}))
    assert "content-type" not in request.headers
    assert_error_shape(await api.send(request), 415, "unsupported_media_type")
    assert rows_with_name(topology, name) == 0


async def test_body_over_the_limit_is_413_and_writes_nothing(
    api: httpx.AsyncClient, topology: Topology
) -> None:
    name = unique_name()
    body = json.dumps({"first_name": name, "last_name": "x", "pad": "y" * 70_000})
    response = await api.post(USERS_URL, content=body, headers={"content-type": "application/json"})
    assert_error_shape(response, 413, "body_too_large")
    assert rows_with_name(topology, name) == 0


async def test_chunked_body_over_the_limit_is_413(api: httpx.AsyncClient, topology: Topology) -> None:
    name = unique_name()

    async def chunks():  # no Content-Length: the limit must hold while streaming
        yield json.dumps({"first_name": name, "last_name": "x", "pad": ""})[:-2].encode()
        for _ in range(20):
            yield b"z" * 4096
        yield b'"}'

    response = await api.post(USERS_URL, content=chunks(), headers={"content-type": "application/json"})
    assert_error_shape(response, 413, "body_too_large")
    assert rows_with_name(topology, name) == 0


async def test_json_with_charset_is_accepted(api: httpx.AsyncClient) -> None:
    response = await api.post(
        USERS_URL,
        content=json.dumps({"first_name": "A", "last_name": "B"}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


async def test_bad_put_and_patch_bodies_change_nothing(api: httpx.AsyncClient) -> None:
    created = (await api.post(USERS_URL, json={"first_name": "Keep", "last_name": "Me"})).json()
    url = f"{USERS_URL}/{created['id']}"
    assert_error_shape(await api.put(url, json={"first_name": "", "last_name": "x"}), 422)
    assert_error_shape(await api.put(url, content=b"{", headers={"content-type": "application/json"}), 400)
    assert_error_shape(await api.patch(url, json={"last_name": 3}), 422)
    assert_error_shape(await api.patch(url, json={"nick": "x"}), 422)
    assert_error_shape(await api.patch(url, content=b"x", headers={"content-type": "text/plain"}), 415)
    got = (await api.get(url)).json()
    assert got == created


async def test_malformed_id_on_every_method_is_400(api: httpx.AsyncClient) -> None:
    url = f"{USERS_URL}/1234"
    assert_error_shape(await api.get(url), 400, "invalid_id")
    assert_error_shape(await api.put(url, json={"first_name": "a", "last_name": "b"}), 400, "invalid_id")
    assert_error_shape(await api.patch(url, json={"first_name": "a"}), 400, "invalid_id")
    assert_error_shape(await api.delete(url), 400, "invalid_id")


async def test_unknown_route_is_404_json(api: httpx.AsyncClient) -> None:
    assert_error_shape(await api.get("/api/v1/nothing-here"), 404, "route_not_found")
    assert_error_shape(await api.get(f"{USERS_URL}/{uuid.uuid4()}/friends"), 404, "route_not_found")


async def test_wrong_method_is_405_json_with_allow(api: httpx.AsyncClient) -> None:
    response = await api.delete(USERS_URL)
    error = assert_error_shape(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"] and "GET" in error["details"]["allow"]
    response = await api.post(f"{USERS_URL}/{uuid.uuid4()}", json={})
    assert_error_shape(response, 405, "method_not_allowed")
    assert "PATCH" in response.headers["allow"]


async def test_errors_never_leak_a_stack_trace(api: httpx.AsyncClient) -> None:
    response = await api.post(USERS_URL, content=b"\xff\xfe", headers={"content-type": "application/json"})
    error = assert_error_shape(response, 400)
    assert "Traceback" not in error["message"]
