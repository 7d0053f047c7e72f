"""Which requests the raw-ASGI GET by id takes (every other one goes through Starlette)."""

from __future__ import annotations

from typing import Any

import pytest

from messenger.api.users import fast_get_user_id

ID = "0190b5f2-8a3c-7d4e-9f00-123456789abc"


def scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


def test_takes_get_of_one_user() -> None:
    assert fast_get_user_id(scope("GET", f"/api/v1/users/{ID}")) == ID


def test_leaves_a_request_with_a_bearer_token_to_the_session_check() -> None:
    request = scope("GET", f"/api/v1/users/{ID}")
    request["headers"] = [(b"accept", b"*/*"), (b"authorization", b"Bearer x")]
    assert fast_get_user_id(request) is None


def test_hands_malformed_ids_to_the_handler_for_its_400() -> None:
    assert fast_get_user_id(scope("GET", "/api/v1/users/not-a-uuid")) == "not-a-uuid"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"/api/v1/users/{ID}"),
        ("DELETE", f"/api/v1/users/{ID}"),
        ("HEAD", f"/api/v1/users/{ID}"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/users/"),
        ("GET", f"/api/v1/users/{ID}/"),
        ("GET", f"/api/v1/users/{ID}/followers"),
        ("GET", f"/api/v1/usersx/{ID}"),
    ],
)
def test_leaves_everything_else_to_the_router(method: str, path: str) -> None:
    assert fast_get_user_id(scope(method, path)) is None
