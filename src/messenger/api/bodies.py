"""Reading a JSON request body: content type, size limit, decoding and validation."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from messenger.api.context import context
from messenger.api.errors import HttpError, invalid_body

T = TypeVar("T")

GROUP_BODY_BYTES = 128 * 1024
"""The least body limit of `POST /api/v1/conversations`, whatever MESSENGER_MAX_BODY_BYTES says.
A group may list 1,000 member ids (MEMBER_LIMIT): ~40 KB written compactly, ~44 KB one per
line, plus a title of 400 characters that is up to 4.8 KB with every character escaped. Under
the general limit (64 KiB) a schema-valid body refused with 413 was a matter of formatting
(indentation, escapes); twice that leaves every ordinary formatting room.
"""


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_json(request: Request, decoder: msgspec.json.Decoder[T], max_bytes: int) -> T:
    """The body decoded into the decoder's type; 415 / 413 / 400 / 422 otherwise."""
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        raise HttpError(
            415,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
            {"content_type": content_type or None},
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:  # a chunked body or a lying Content-Length: stop reading
            raise _too_large(max_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid_body(exc) from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


async def read_body(request: Request, decoder: msgspec.json.Decoder[T], at_least: int = 0) -> T:
    """`read_json` with the app's body size limit (`MESSENGER_MAX_BODY_BYTES`), or `at_least`
    where a route's largest schema-valid body needs more (group creation)."""
    return await read_json(request, decoder, max(context(request).settings.max_body_bytes, at_least))


def _too_large(max_bytes: int) -> HttpError:
    return HttpError(
        413, "body_too_large", f"the body is larger than {max_bytes} bytes", {"max_bytes": max_bytes}
    )
