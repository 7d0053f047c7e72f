"""Accounts and auth over HTTP: sign-up, sign-in, tokens, /me, and who may change a user."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
import jwt
import pytest
from redis.asyncio import Redis

from messenger.settings import Settings
from tests.e2e.api.conftest import USERS_URL, running_app, with_redis_url

PASSWORD = "s3cret-pass"


def _new(prefix: str = "u") -> dict[str, str]:
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    return {"username": name, "email": f"{name}@Example.com", "password": PASSWORD,
            "first_name": "Ada", "last_name": "Lovelace"}


async def _register(api: httpx.AsyncClient, **overrides: str) -> dict[str, Any]:
    body = {**_new(), **overrides}
    response = await api.post("/api/v1/accounts", json=body)
    assert response.status_code == 201, response.text
    return {**response.json(), "password": body["password"]}


async def _login(api: httpx.AsyncClient, login: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await api.post("/api/v1/auth/login", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def clear_client_bucket(settings: Settings, limit: str, client: str) -> None:
    redis = Redis.from_url(settings.topology.redis_url)
    try:
        await redis.delete(f"rl:{limit}:{client}")
    finally:
        await redis.aclose()


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_register_login_me_refresh_logout(api: httpx.AsyncClient) -> None:
    me = await _register(api)
    assert me["account"]["email"] == me["account"]["email"].lower()
    assert "password" not in me["account"] and "password_hash" not in str(me)
    tokens = await _login(api, me["account"]["username"].upper())
    got = await api.get("/api/v1/me", headers=_bearer(tokens))
    assert got.status_code == 200 and got.json()["id"] == me["id"]
    assert (await api.get(f"{USERS_URL}/{me['id']}")).json()["first_name"] == "Ada"  # its user
    refreshed = await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert (await api.post("/api/v1/auth/logout", json={"refresh_token": new["refresh_token"]})).status_code == 204
    again = await api.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert again.status_code == 401 and again.json()["error"]["code"] == "unauthenticated"


async def test_duplicate_username_or_email_in_any_case_is_409(api: httpx.AsyncClient) -> None:
    me = await _register(api)
    for clash in ({"username": me["account"]["username"].upper()}, {"email": me["account"]["email"].upper()}):
        response = await api.post("/api/v1/accounts", json={**_new(), **clash})
        assert response.status_code == 409


async def test_a_taken_username_and_a_taken_email_get_the_same_answer(api: httpx.AsyncClient) -> None:
    # Registration must not tell which email is registered beyond what sign-in tells (nothing):
    # a clash on the username and one on the email are the same 409, body for body.
    me = await _register(api)
    answers = []
    for clash in ({"username": me["account"]["username"]}, {"email": me["account"]["email"]}):
        response = await api.post("/api/v1/accounts", json={**_new(), **clash})
        assert response.status_code == 409
        answers.append(response.json())
    assert answers[0] == answers[1]
    assert answers[0]["error"]["details"] == {"fields": ["username", "email"]}


@pytest.mark.parametrize(
    "field, value",
    [("username", "ab"), ("username", "bad name"), ("email", "not-an-email"), ("password", "short"),
     ("password", "p" * 129), ("first_name", ""), ("last_name", "x" * 101)],
)
async def test_each_invalid_field_is_a_422_naming_it_and_writes_nothing(
    api: httpx.AsyncClient, field: str, value: str
) -> None:
    body = {**_new(), field: value}
    response = await api.post("/api/v1/accounts", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == field
    login = await api.post("/api/v1/auth/login", json={"login": body["username"], "password": PASSWORD})
    assert login.status_code in (401, 422)


async def test_wrong_password_and_unknown_user_are_the_same_401(api: httpx.AsyncClient) -> None:
    me = await _register(api)
    wrong = await api.post("/api/v1/auth/login", json={"login": me["account"]["username"], "password": "nope-nope"})
    ghost = await api.post("/api/v1/auth/login", json={"login": "ghost" + uuid.uuid4().hex[:8], "password": PASSWORD})
    assert wrong.status_code == ghost.status_code == 401
    assert wrong.json() == ghost.json()


async def test_tampered_expired_and_foreign_tokens_are_401(api: httpx.AsyncClient, settings: Settings) -> None:
    me = await _register(api)
    tokens = await _login(api, me["account"]["username"])
    head, body, sig = tokens["access_token"].split(".")
    expired = jwt.encode({"sub": me["id"], "iat": int(time.time()) - 2000, "exp": int(time.time()) - 1000,
                          "sid": str(uuid.uuid4()), "iss": "messenger", "typ": "access"},
                         settings.token_keys.current.secret, algorithm="HS256",
                         headers={"kid": settings.token_keys.current.kid})
    for header in (f"Bearer {head}.{body}.{sig[::-1]}", f"Bearer {expired}", "Bearer garbage", "Basic abc"):
        response = await api.get("/api/v1/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["error"]["code"] == "unauthenticated"
    assert (await api.get("/api/v1/me")).status_code == 401


async def test_a_deleted_users_token_no_longer_works(api: httpx.AsyncClient) -> None:
    me = await _register(api)
    tokens = await _login(api, me["account"]["username"])
    assert (await api.delete("/api/v1/me", headers=_bearer(tokens))).status_code == 204
    assert (await api.get("/api/v1/me", headers=_bearer(tokens))).status_code == 401
    assert (await api.get(f"{USERS_URL}/{me['id']}")).status_code == 404
    refresh = await api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401


async def test_changing_a_user_with_an_account_needs_its_own_token(api: httpx.AsyncClient) -> None:
    alice, bob = await _register(api), await _register(api)
    alice_tokens = await _login(api, alice["account"]["username"])
    url = f"{USERS_URL}/{bob['id']}"
    body = {"first_name": "Hacked"}
    assert (await api.patch(url, json=body)).status_code == 401
    forbidden = await api.patch(url, json=body, headers=_bearer(alice_tokens))
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert (await api.delete(url, headers=_bearer(alice_tokens))).status_code == 403
    own = await api.patch(f"{USERS_URL}/{alice['id']}", json=body, headers=_bearer(alice_tokens))
    assert own.status_code == 200 and own.json()["first_name"] == "Hacked"
    assert (await api.get(url)).json()["first_name"] == "Ada"


async def test_open_user_creation_is_off_unless_enabled(settings: Settings) -> None:
    async with running_app(replace(settings, open_users=False, run_background=False)) as closed:
        response = await closed.post(USERS_URL, json={"first_name": "A", "last_name": "B"})
        assert response.status_code == 403
        assert "/api/v1/accounts" in response.json()["error"]["message"]


async def test_patch_me_renames_and_moves_the_username(api: httpx.AsyncClient) -> None:
    me = await _register(api)
    tokens = await _login(api, me["account"]["username"])
    new_name = "n" + uuid.uuid4().hex[:10]
    response = await api.patch("/api/v1/me", json={"username": new_name.upper(), "last_name": "Byron"},
                               headers=_bearer(tokens))
    assert response.status_code == 200, response.text
    assert response.json()["account"]["username"] == new_name and response.json()["last_name"] == "Byron"
    await _login(api, new_name)
    taken = await api.post("/api/v1/accounts", json={**_new(), "username": new_name})
    assert taken.status_code == 409
    empty = await api.patch("/api/v1/me", json={}, headers=_bearer(tokens))
    assert empty.status_code == 422


async def test_password_change_needs_the_current_password(api: httpx.AsyncClient) -> None:
    me = await _register(api)
    tokens = await _login(api, me["account"]["username"])
    url = "/api/v1/me/password"
    wrong = await api.post(url, json={"current_password": "not-it-at-all", "new_password": "another-pass"},
                           headers=_bearer(tokens))
    assert wrong.status_code == 401
    ok = await api.post(url, json={"current_password": PASSWORD, "new_password": "another-pass"},
                        headers=_bearer(tokens))
    assert ok.status_code == 204
    await _login(api, me["account"]["username"], "another-pass")


async def test_a_get_by_id_with_an_ended_session_s_token_is_refused(api: httpx.AsyncClient) -> None:
    """The GET by id is served in front of Starlette's stack (api/app.py), but not with a
    bearer token: the session check must refuse an ended session on every route."""
    me = await _register(api)
    tokens = await _login(api, me["account"]["username"])
    assert (await api.get(f"{USERS_URL}/{me['id']}", headers=_bearer(tokens))).status_code == 200
    changed = await api.post("/api/v1/me/password", headers=_bearer(tokens),
                             json={"current_password": PASSWORD, "new_password": "another-pass"})
    assert changed.status_code == 204
    refused = await api.get(f"{USERS_URL}/{me['id']}", headers=_bearer(tokens))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
    assert (await api.get(f"{USERS_URL}/{me['id']}")).status_code == 200  # no token: public


async def test_repeated_failed_logins_get_429_with_retry_after(settings: Settings) -> None:
    strict = replace(settings, login_failures_per_account=3, run_background=False)
    async with running_app(strict) as api:
        me = await _register(api)
        for _ in range(3):
            response = await api.post("/api/v1/auth/login", json={"login": me["account"]["username"], "password": "wrong-pass"})
            assert response.status_code == 401
        limited = await api.post("/api/v1/auth/login", json={"login": me["account"]["username"], "password": PASSWORD})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"


async def test_sign_in_is_a_503_with_the_json_error_shape_when_its_limit_cannot_be_checked(
    settings: Settings, api: httpx.AsyncClient
) -> None:
    me = await _register(api)
    async with running_app(replace(with_redis_url(settings, "redis://127.0.0.1:1/0"), run_background=False)) as down:
        response = await down.post("/api/v1/auth/login", json={"login": me["account"]["username"], "password": PASSWORD})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert response.headers["retry-after"] == "1"


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(settings: Settings) -> None:
    # The in-process client's peer is 127.0.0.1: untrusted, it shares one bucket whatever it sends.
    body = {"login": "ghost" + uuid.uuid4().hex[:8], "password": PASSWORD}
    untrusted = replace(settings, login_attempts_per_client=2, run_background=False)
    await clear_client_bucket(settings, "login-client", "127.0.0.1")
    async with running_app(untrusted) as api:
        codes = [(await api.post("/api/v1/auth/login", json=body, headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
                 for i in range(3)]
    assert codes == [401, 401, 429]
    trusted = replace(untrusted, trusted_proxies=("127.0.0.1/32",))
    async with running_app(trusted) as api:
        tag = uuid.uuid4().int % 200
        codes = [(await api.post("/api/v1/auth/login", json=body, headers={"X-Forwarded-For": f"203.0.{tag}.{i}"})).status_code
                 for i in range(3)]
    assert codes == [401, 401, 401]


async def test_login_body_must_name_exactly_one_login(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/auth/login", json={"password": PASSWORD})
    assert response.status_code == 422
    both = await api.post("/api/v1/auth/login", json={"username": "a", "email": "a@b.co", "password": PASSWORD})
    assert both.status_code == 422
