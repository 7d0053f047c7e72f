"""Opaque, tamper-evident cursors for keyset pagination.

A token is ``base64url(kid_len || kid || json_payload || tag)`` without padding, where ``kid``
names the key (one byte of length, then the ASCII id) and ``tag`` is HMAC-SHA256 of everything
before it under that key, truncated to 16 bytes (128 bits: forging one takes ~2^128 tries).
The current key of the set signs; a cursor signed with a previous key still decodes, so keys
rotate without breaking the pages clients are walking. Clients cannot read a meaning into the token or change it: any change is rejected.
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
from messenger.domain.keys import KeySet

CursorPayload = dict[str, str | int]

MAX_TOKEN_LENGTH = 512
TAG_LENGTH = 16
MIN_SECRET_LENGTH = 16

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _invalid_cursor() -> InvalidInput:
    return InvalidInput("invalid cursor", details={"field": "cursor"})


class CursorCodec:
    """Encodes cursors under the current key of a set and verifies them under any key of it;
    build once and share it."""

    __slots__ = ("_decoder", "_encoder", "_header", "_macs")

    def __init__(self, keys: KeySet) -> None:
        keys.require_length(MIN_SECRET_LENGTH, "cursor")
        self._macs = {
            key.kid.encode(): hmac.new(key.secret, digestmod=hashlib.sha256) for key in keys.keys
        }
        kid = keys.current.kid.encode()
        self._header = bytes([len(kid)]) + kid
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
        signed = self._header + self._encoder.encode(payload)
        token = base64.urlsafe_b64encode(signed + self._tag(self._header[1:], signed)).rstrip(b"=").decode("ascii")
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError(f"cursor payload too large: {len(token)} > {MAX_TOKEN_LENGTH}")
        return token

    def decode(self, token: str) -> CursorPayload:
        """The payload of a token this codec made.

        Raises ``InvalidInput("invalid cursor")`` for anything else, and nothing else: a token
        that is not a string, too long, not canonical base64url, too short, tampered with, made
        under a key not in the set, or whose payload does not have the expected shape.
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
        kid_end = 1 + raw[0] if raw else 0
        if len(raw) <= kid_end + TAG_LENGTH:
            raise _invalid_cursor()
        signed, tag = raw[:-TAG_LENGTH], raw[-TAG_LENGTH:]
        kid, body = raw[1:kid_end], raw[kid_end:-TAG_LENGTH]
        if kid not in self._macs or not hmac.compare_digest(self._tag(kid, signed), tag):
            raise _invalid_cursor()
        try:
            return self._decoder.decode(body)
        except msgspec.MsgspecError:
            raise _invalid_cursor() from None

    def _tag(self, kid: bytes, signed: bytes) -> bytes:
        mac = self._macs[kid].copy()
        mac.update(signed)
        return mac.digest()[:TAG_LENGTH]
