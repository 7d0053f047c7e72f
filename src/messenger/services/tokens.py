"""Access tokens (signed, short-lived, stateless) and refresh tokens (opaque, stored hashed).

An access token is a JWT (HS256) whose subject is the user id, so any worker can authenticate a
request and knows the user's shard without a lookup. A refresh token is `<user id>.<random>`:
the id part routes it to the user's shard, where only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from messenger.domain.errors import Unauthenticated

ALGORITHM = "HS256"
ISSUER = "messenger"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    expires_at: float


class TokenSigner:
    def __init__(self, secret: bytes, *, access_ttl_s: int = 900) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret needs at least 32 bytes")
        self._secret = secret
        self.access_ttl_s = access_ttl_s

    def issue_access(self, user_id: uuid.UUID, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {"sub": str(user_id), "iat": issued, "exp": issued + self.access_ttl_s, "iss": ISSUER, "typ": "access"}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify_access(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER,
                options={"require": ["sub", "exp", "iat", "iss"]},
            )
            if claims.get("typ") != "access":
                raise Unauthenticated("not an access token")
            return AccessClaims(uuid.UUID(claims["sub"]), float(claims["exp"]))
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthenticated("invalid access token") from None


def new_refresh_token(user_id: uuid.UUID) -> str:
    return f"{user_id}.{secrets.token_urlsafe(32)}"


def refresh_token_user(token: str) -> uuid.UUID:
    """The user a refresh token claims to belong to (to route it); proves nothing by itself."""
    head, _, rest = token.partition(".")
    try:
        if not rest or len(token) > 200:
            raise ValueError
        return uuid.UUID(head)
    except ValueError:
        raise Unauthenticated("invalid refresh token") from None


def refresh_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
