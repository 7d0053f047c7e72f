"""Every error a client sees, in one shape and with one status per kind:

    {"error": {"code": "...", "message": "...", "details": {...}}}

Domain errors, HTTP-level errors (routing, body, content type) and anything unexpected are
all turned into that shape here and nowhere else; a client never gets a stack trace or HTML.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from messenger.api.responses import JSON, encode
from messenger.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    LimiterUnavailable,
    MessengerError,
    NotFound,
    RateLimited,
    ShardBusy,
    ShardUnavailable,
    Unauthenticated,
)

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[MessengerError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Unauthenticated: 401,
    Forbidden: 403,
    RateLimited: 429,
    ShardUnavailable: 503,
    ShardBusy: 503,
    LimiterUnavailable: 503,
}
CODE_BY_HTTP_STATUS = {
    400: "bad_request",
    404: "route_not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


class HttpError(Exception):
    """An error of the HTTP exchange itself (not of the domain): bad JSON, too big a body..."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = encode({"error": {"code": code, "message": message, "details": details or {}}})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


_FIELD_PATH = re.compile(r"at `\$\.?([^`]*)`")


def invalid_body(exc: msgspec.ValidationError) -> HttpError:
    """A body of the wrong shape, naming the field msgspec complained about."""
    message = str(exc)
    match = _FIELD_PATH.search(message)
    field = match.group(1) if match else None
    if field is None and message.startswith("Object missing required field"):
        field = message.split("`")[1]
    if field is None and message.startswith("Object contains unknown field"):
        field = message.split("`")[1]
    details = {"field": field} if field else {}
    return HttpError(422, "invalid_input", message, details)


async def handle_messenger_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MessengerError)
    status = next(
        (s for kind, s in STATUS_BY_ERROR.items() if isinstance(exc, kind)), 500
    )
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    elif isinstance(exc, ShardUnavailable | ShardBusy | LimiterUnavailable):
        headers = {"Retry-After": "1"}
    return error_response(status, exc.code, exc.message, exc.details, headers)


async def handle_http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def handle_starlette_http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors raised by Starlette itself: unknown route (404), wrong method (405)."""
    assert isinstance(exc, HTTPException)
    code = CODE_BY_HTTP_STATUS.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route for {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    details = {"allow": headers["Allow"]} if headers and "Allow" in headers else {}
    return error_response(exc.status_code, code, message, details, headers)


async def handle_unexpected(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal error; it has been logged")


EXCEPTION_HANDLERS = {
    MessengerError: handle_messenger_error,
    HttpError: handle_http_error,
    HTTPException: handle_starlette_http_exception,
    Exception: handle_unexpected,
}
