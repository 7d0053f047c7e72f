"""Refusals the document states but a JSON Schema cannot decide: they depend on the server's
state, not on the request's shape. schemathesis's `positive_data_acceptance` takes every 422 to
a schema-valid request for a schema that says too little, and `ensure_resource_availability`
every 404 after a create for a lost resource; these are the cases where neither holds, told
apart by the error the server gave (`details` names the field, or the missing thing)."""

from __future__ import annotations

import json
from typing import Any

from schemathesis import Case, Response
from schemathesis.core.failures import Failure
from schemathesis.openapi.checks import (
    EnsureResourceAvailability,
    RejectedPositiveData,
    UseAfterFree,
)


def _error(response: Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _state_dependent_422(error: dict[str, Any]) -> bool:
    details = error.get("details") or {}
    message = str(error.get("message", ""))
    return (
        "unknown" in details  # member_ids / user_ids / user_id naming users that do not exist
        or details.get("field") == "cursor"  # a cursor this server did not sign
        or message == "a user cannot follow itself"  # the path's user is the caller
        or message == "a direct conversation needs another user"  # user_id is the caller
        or message == "after must be older than before"  # two valid ids in the wrong order
    )


def _missing_other_thing(error: dict[str, Any], case: Case) -> bool:
    """A 404 about something the request named besides the created resource (a message id in
    the body, say): the resource the check followed is there."""
    missing = (error.get("details") or {}).get("id")
    return missing is not None and missing not in {str(v) for v in (case.path_parameters or {}).values()}


def is_expected(failure: Failure, case: Case, response: Response) -> bool:
    error = _error(response)
    if isinstance(failure, RejectedPositiveData) and response.status_code == 422:
        return _state_dependent_422(error)
    if isinstance(failure, EnsureResourceAvailability | UseAfterFree) and response.status_code == 404:
        return _missing_other_thing(error, case)
    return False
