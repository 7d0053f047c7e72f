"""Access tokens (signed, short-lived, stateless) and refresh tokens (opaque, stored hashed).

An access token is a JWT (HS256) whose subject is the user id, so any worker can authenticate a
request and knows the user's shard without a lookup. Its header names the signing key (`kid`),
so keys rotate: a token signed with a previous key of the set still verifies until it expires.
Its `sid` claim is the session (the refresh-token family it was issued with), which logout,
a password change or deleting the account revoke (services/sessions.py).
A refresh token is `<user id>.<random>`: the id part routes it to the user's shard, where only
its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from messenger.domain.errors import Unauthenticated
from messenger.domain.keys import KeySet

ALGORITHM = "HS256"
ISSUER = "messenger"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    expires_at: float
    session_id: uuid.UUID


class TokenSigner:
    def __init__(self, keys: KeySet, *, access_ttl_s: int = 900) -> None:
        self._keys = keys.require_length(MIN_SECRET_BYTES, "token")
        self.access_ttl_s = access_ttl_s

    def issue_access(self, user_id: uuid.UUID, session_id: uuid.UUID, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": str(user_id), "sid": str(session_id), "iat": issued, "exp": issued + self.access_ttl_s,
            "iss": ISSUER, "typ": "access",
        }
        key = self._keys.current
        return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})

    def verify_access(self, token: str) -> AccessClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:  # no kid, or a key that has been retired
                raise Unauthenticated("invalid access token")
            claims = jwt.decode(
                token, key.secret, algorithms=[ALGORITHM], issuer=ISSUER,
                options={"require": ["sub", "sid", "exp", "iat", "iss"]},
            )
            if claims.get("typ") != "access":
                raise Unauthenticated("not an access token")
            return AccessClaims(uuid.UUID(claims["sub"]), float(claims["exp"]), uuid.UUID(claims["sid"]))
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
