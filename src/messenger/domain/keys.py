"""Signing keys with key ids, so a key can be rotated while what the old one signed still verifies.

A key set is ordered: the first key signs, every key verifies (by the key id the token or cursor
carries). Written as text it is `kid:secret[,kid:secret…]`, newest first, the same in the
environment (`MESSENGER_TOKEN_SECRETS`) and in a secrets file (README, "Security settings for
production"). Keys are random and configured; nothing here derives one from anything else.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
"""Key ids travel in JWT headers and inside cursors: short, and safe in both."""


class InvalidKeys(ValueError):
    """A key set that cannot be used: malformed text, a short secret, a repeated key id."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[SigningKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidKeys("a key set needs at least one key")
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise InvalidKeys(f"key ids repeat: {', '.join(kids)}")
        for key in self.keys:
            if KID_PATTERN.fullmatch(key.kid) is None:
                raise InvalidKeys(f"key id {key.kid!r} must be 1-32 of A-Z a-z 0-9 _ -")

    @property
    def current(self) -> SigningKey:
        return self.keys[0]

    def get(self, kid: str) -> SigningKey | None:
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    def require_length(self, minimum: int, what: str) -> KeySet:
        for key in self.keys:
            if len(key.secret) < minimum:
                raise InvalidKeys(f"{what} key {key.kid!r} needs at least {minimum} bytes")
        return self

    @classmethod
    def single(cls, secret: bytes, kid: str = "k0") -> KeySet:
        return cls((SigningKey(kid, secret),))

    @classmethod
    def parse(cls, text: str) -> KeySet:
        """`kid:secret[,kid:secret…]`, newest (signing) key first; the secret is its UTF-8 bytes."""
        keys = []
        for entry in (e.strip() for e in text.split(",")):
            kid, sep, secret = entry.partition(":")
            if not sep or not kid or not secret:
                raise InvalidKeys("write keys as kid:secret[,kid:secret…], newest first")
            keys.append(SigningKey(kid.strip(), secret.strip().encode()))
        return cls(tuple(keys))

    def text(self) -> str:
        return ",".join(f"{k.kid}:{k.secret.decode()}" for k in self.keys)


def generate_key() -> SigningKey:
    """A fresh random key: 256 bits of secret, a short random id."""
    return SigningKey("k" + secrets.token_hex(3), secrets.token_urlsafe(32).encode())
