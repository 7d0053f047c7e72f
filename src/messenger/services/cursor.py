"""Opaque, tamper-evident cursors for keyset pagination.

A token is ``base64url(json_payload || tag)`` without padding, where ``tag`` is HMAC-SHA256 of
the payload under the server's secret, truncated to 16 bytes (128 bits: forging one takes ~2^128
tries). Clients cannot read a meaning into the token or change it: any change is rejected.
The payload is a flat ``{str: str | int}`` mapping, e.g. ``{"v": 1, "o": "asc", "id": "<uuid>"}``;
put in it everything the next page depends on (order, filters), so a cursor cannot be replayed
against a different query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

import msgspec

from messenger.domain.errors import InvalidInput

CursorPayload = dict[str, str | int]

MAX_TOKEN_LENGTH = 512
TAG_LENGTH = 16
MIN_SECRET_LENGTH = 16

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _invalid_cursor() -> InvalidInput:
    return InvalidInput("invalid cursor", details={"field": "cursor"})


class CursorCodec:
    """Encodes and verifies cursors under one secret; build once and share it."""

    __slots__ = ("_decoder", "_encoder", "_mac")

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"cursor secret must be at least {MIN_SECRET_LENGTH} bytes")
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(CursorPayload)

    def encode(self, payload: CursorPayload) -> str:
        """The token for ``payload``.

        Raises ``TypeError`` for a payload that is not ``{str: str | int}`` and ``ValueError``
        for one too large for a token: both are bugs in the caller, not client input.
        """
        for key, value in payload.items():
            # bool is an int subclass but would not decode back as one.
            if (
                not isinstance(key, str)
                or not isinstance(value, str | int)
                or isinstance(value, bool)
            ):
                raise TypeError(f"cursor payload must map str to str | int, got {payload!r}")
        body = self._encoder.encode(payload)
        token = base64.urlsafe_b64encode(body + self._tag(body)).rstrip(b"=").decode("ascii")
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError(f"cursor payload too large: {len(token)} > {MAX_TOKEN_LENGTH}")
        return token

    def decode(self, token: str) -> CursorPayload:
        """The payload of a token this codec made.

        Raises ``InvalidInput("invalid cursor")`` for anything else, and nothing else: a token
        that is not a string, too long, not canonical base64url, too short, tampered with, made
        under another secret, or whose payload does not have the expected shape.
        """
        if (
            not isinstance(token, str)
            or not 0 < len(token) <= MAX_TOKEN_LENGTH
            or _BASE64URL.fullmatch(token) is None
        ):
            raise _invalid_cursor()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid_cursor() from None
        # Unused low bits in the last character would let two tokens carry the same bytes.
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
            raise _invalid_cursor()
        if len(raw) <= TAG_LENGTH:
            raise _invalid_cursor()
        body, tag = raw[:-TAG_LENGTH], raw[-TAG_LENGTH:]
        if not hmac.compare_digest(self._tag(body), tag):
            raise _invalid_cursor()
        try:
            return self._decoder.decode(body)
        except msgspec.MsgspecError:
            raise _invalid_cursor() from None

    def _tag(self, body: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(body)
        return mac.digest()[:TAG_LENGTH]
