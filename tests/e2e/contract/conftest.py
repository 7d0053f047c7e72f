"""Fixtures for the contract test: the real server (`messenger serve`) over the session's
throwaway cluster, a signed-in account, and the server's own /openapi.json loaded by
schemathesis with that account's bearer token."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.core.failures import Failure

from tests.e2e.contract import refusals
from tests.support.servers import serving


@dataclass(frozen=True)
class SignedIn:
    base_url: str
    user_id: str
    access_token: str


@pytest.fixture(scope="session")
def contract_server(cluster: Any) -> Iterator[str]:
    with serving(cluster.topology_path, workers=1) as (base, _pid):
        yield base


@pytest.fixture(scope="session")
def signed_in(contract_server: str) -> SignedIn:
    name = f"contract{uuid.uuid4().hex[:12]}"
    password = "contract-test-password"
    with httpx.Client(base_url=contract_server, timeout=10) as client:
        created = client.post("/api/v1/accounts", json={
            "username": name, "email": f"{name}@example.com", "password": password,
            "first_name": "Contract", "last_name": "Test",
        })
        assert created.status_code == 201, created.text
        tokens = client.post("/api/v1/auth/login", json={"login": name, "password": password})
        assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return SignedIn(contract_server, body["user_id"], body["access_token"])


# CI: a fixed seed, derandomized, one pass of every phase within a bounded budget. `make fuzz`
# (MESSENGER_FUZZ_SECONDS set): a random seed, a larger budget, and phases repeated until the
# time is up.
CI_BUDGET = {"seed": 16, "max-examples": 10, "max-steps": 6}
FUZZ_BUDGET = {"max-examples": 100, "max-steps": 20}
# A plain GET of the WebSocket's path is schema-valid, but only a handshake can succeed there:
# every other request gets the documented 426.
_WS_OPERATION = {
    "include-path": "/api/v1/ws",
    "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "426", "429", "5xx"]}},
}


def schemathesis_config(token: str) -> dict[str, Any]:
    seconds = os.environ.get("MESSENGER_FUZZ_SECONDS")
    budget = FUZZ_BUDGET if seconds else CI_BUDGET
    config: dict[str, Any] = {
        "headers": {"Authorization": f"Bearer {token}"},
        "workers": 1,
        "generation": {"mode": "all", "max-examples": budget["max-examples"],
                       "deterministic": not seconds},
        "phases": {"stateful": {"max-steps": budget["max-steps"]}},
        "suppress-health-check": ["all"],
        "operations": [_WS_OPERATION],
    }
    if seconds:
        config["max-time"] = int(seconds)
    else:
        config["seed"] = budget["seed"]
    return config


@pytest.fixture(scope="session")
def contract_schema(signed_in: SignedIn) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(schemathesis_config(signed_in.access_token))
    schema = schemathesis.openapi.from_url(f"{signed_in.base_url}/openapi.json", config=config)

    @schema.hook
    def filter_failure(context: schemathesis.HookContext, failure: Failure, case: Case,
                       response: schemathesis.Response) -> bool:
        return not refusals.is_expected(failure, case, response)

    return schema
