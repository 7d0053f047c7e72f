from __future__ import annotations

import json

import msgspec
import pytest

from messenger.api.bodies import is_json
from messenger.api.errors import handle_messenger_error, invalid_body
from messenger.api.openapi import build_openapi
from messenger.api.schemas.users import UserCreate
from messenger.domain.errors import RangeMoved


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json"],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    assert is_json(content_type)


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-www-form-urlencoded", "text/json"])
def test_other_content_types_are_not(content_type: str) -> None:
    assert not is_json(content_type)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"first_name": 1, "last_name": "x"}', "first_name"),
        (b'{"first_name": "a"}', "last_name"),
        (b'{"first_name": "a", "last_name": "b", "x": 1}', "x"),
    ],
)
def test_validation_errors_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(msgspec.ValidationError) as error:
        msgspec.json.decode(body, type=UserCreate)
    http_error = invalid_body(error.value)
    assert http_error.status == 422 and http_error.details == {"field": field}


def test_openapi_references_resolve() -> None:
    document = build_openapi()
    text = msgspec.json.encode(document).decode()
    schemas = document["components"]["schemas"]
    for name in ("UserCreate", "UserReplace", "UserPatch", "UserOut", "UserPage", "ErrorBody"):
        assert f"#/components/schemas/{name}" in text
        assert name in schemas


async def test_a_moving_range_is_a_retryable_503_naming_the_shard() -> None:
    response = await handle_messenger_error(None, RangeMoved("shard_1"))  # type: ignore[arg-type]
    body = json.loads(bytes(response.body))
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert body["error"]["code"] == "range_moved"
    assert body["error"]["details"]["shard"] == "shard_1" and body["error"]["details"]["retryable"] is True
