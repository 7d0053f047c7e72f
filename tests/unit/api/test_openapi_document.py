"""What /openapi.json says where it was made to match the server (issue 16), and that its
patterns agree with the domain's own checks of the same text."""

from __future__ import annotations

import re
from typing import Any

import pytest

from messenger.api.bodies import GROUP_BODY_BYTES
from messenger.api.openapi import build_openapi
from messenger.domain.conversations import clean_body, clean_client_message_id, clean_title
from messenger.domain.errors import InvalidInput
from messenger.domain.users import clean_name

DOCUMENT = build_openapi()
PATHS = DOCUMENT["paths"]
SCHEMAS = DOCUMENT["components"]["schemas"]


def _statuses(path: str, method: str) -> set[str]:
    return set(PATHS[path][method]["responses"])


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_changing_a_user_documents_401_and_403(method: str) -> None:
    assert {"401", "403"} <= _statuses("/api/v1/users/{user_id}", method)
    assert {} in PATHS["/api/v1/users/{user_id}"][method]["security"]  # a token is optional


@pytest.mark.parametrize(("path", "method"), [
    ("/api/v1/conversations", "post"),
    ("/api/v1/conversations/{conversation_id}/messages", "post"),
])
def test_idempotent_creates_document_200_beside_201(path: str, method: str) -> None:
    responses = PATHS[path][method]["responses"]
    assert responses["200"]["content"] == responses["201"]["content"]


def test_the_socket_path_documents_426_with_the_upgrade_header() -> None:
    responses = PATHS["/api/v1/ws"]["get"]["responses"]
    assert {"101", "401", "426"} <= set(responses)
    assert "Upgrade" in responses["426"]["headers"]


def _limits() -> list[dict[str, Any]]:
    return [p for item in PATHS.values() for op in item.values()
            for p in op.get("parameters", []) if p["name"] == "limit"]


def test_every_limit_is_a_bounded_integer_that_may_be_empty() -> None:
    limits = _limits()
    assert len(limits) == 6
    for parameter in limits:
        assert parameter["allowEmptyValue"] is True
        schema = parameter["schema"]
        assert schema["type"] == "integer" and schema["minimum"] == 1 and schema["maximum"] >= schema["default"]


def test_every_body_states_its_limit_and_group_creation_fits_1000_members() -> None:
    limits = {(path, method): op["requestBody"]["x-max-body-bytes"]
              for path, item in PATHS.items() for method, op in item.items() if "requestBody" in op}
    assert limits[("/api/v1/conversations", "post")] == GROUP_BODY_BYTES
    assert {v for k, v in limits.items() if k != ("/api/v1/conversations", "post")} == {64 * 1024}
    assert build_openapi(1 << 20)["paths"]["/api/v1/users"]["post"]["requestBody"]["x-max-body-bytes"] == 1 << 20


def test_a_conversation_is_created_by_one_schema_per_type() -> None:
    direct, group = SCHEMAS["DirectConversationCreate"], SCHEMAS["GroupConversationCreate"]
    assert direct["required"] == ["type", "user_id"] and group["required"] == ["type", "title"]
    assert group["properties"]["member_ids"]["maxItems"] == 1000
    assert SCHEMAS["ConversationCreate"]["discriminator"]["propertyName"] == "type"


def _accepts(check: Any, value: str) -> bool:
    try:
        check(value)
    except InvalidInput:
        return False
    return True


SAMPLES = ["Ada", " Ada ", "", " ", "\t\n", "a\x00b", "a\x01b", "tab\there", "line\nbreak", "a\x7fb",
           "\u00a0", "é", "x" * 100, "x" * 101, "x" * 200, "x" * 201, "x" * 4000, "x" * 4001]


@pytest.mark.parametrize(("schema", "check"), [
    (SCHEMAS["UserCreate"]["properties"]["first_name"], lambda v: clean_name("first_name", v)),
    (SCHEMAS["MessageCreate"]["properties"]["body"], clean_body),
    (SCHEMAS["MessageCreate"]["properties"]["client_message_id"], clean_client_message_id),
    (SCHEMAS["GroupConversationCreate"]["properties"]["title"], clean_title),
])
def test_text_the_document_allows_the_domain_accepts(schema: dict[str, Any], check: Any) -> None:
    pattern = re.compile(schema["pattern"])
    for value in SAMPLES:
        allowed = schema["minLength"] <= len(value) <= schema["maxLength"] and pattern.search(value)
        if allowed:
            assert _accepts(check, value), repr(value)
