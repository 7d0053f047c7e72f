"""Whether an access token's session is still alive, and ending sessions.

Access tokens are stateless (a signature and an expiry), so ending a session early needs a
shared record: logout and a password change revoke the token's session id (`sid`, the refresh-
token family it was issued with), deleting the account revokes the user. The record is a Redis
key per revocation (storage/redis/revocations.py), so a check costs no database round trip.

The hot path pays less still: each worker remembers a live session for `cache_s` (1 s), so a
busy client costs one Redis MGET per second per worker, and a revocation made on this worker is
seen here at once; on the others within `cache_s`. Sockets hear it on the live bus (a
`session.revoked` frame on the user's channel) and close with 4401 within the same time.

Redis down: the check cannot see revocations, and lets the token through (its signature and
15-minute expiry still hold) rather than failing every authenticated request; routes where a
ghost would do harm check the user exists in the database too (group creation, sends).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol

import msgspec

from messenger.domain.errors import Unauthenticated
from messenger.services.tokens import AccessClaims
from messenger.storage.redis.revocations import RevocationStore, session_key, user_key

SESSION_REVOKED = "session.revoked"
CACHE_LIMIT = 100_000
_encode = msgspec.json.Encoder().encode


class Publisher(Protocol):
    async def publish(self, user_ids: list[uuid.UUID], frame: bytes) -> None: ...


def revoked_frame(session_id: uuid.UUID | None) -> bytes:
    """What the live bus carries to a user's sockets: one session ended (or all, None)."""
    return _encode({"type": SESSION_REVOKED, "session_id": None if session_id is None else str(session_id)})


class Sessions:
    def __init__(
        self, store: RevocationStore, publisher: Publisher, *, cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._cache_s = cache_s
        self._clock = clock
        self._alive_until: dict[tuple[uuid.UUID, uuid.UUID], float] = {}
        self._revoked: set[uuid.UUID] = set()
        """Session and user ids this worker knows are revoked (for good: ids are never reused)."""

    async def check(self, claims: AccessClaims) -> None:
        """Raise Unauthenticated when the token's session or user has been revoked."""
        if claims.session_id in self._revoked or claims.user_id in self._revoked:
            raise _ended()
        key = (claims.user_id, claims.session_id)
        now = self._clock()
        if self._alive_until.get(key, 0.0) > now:
            return
        revoked = await self._store.any_revoked([session_key(str(claims.session_id)), user_key(str(claims.user_id))])
        if revoked:
            self._remember_revoked([claims.session_id])
            raise _ended()
        if len(self._alive_until) >= CACHE_LIMIT:
            self._alive_until.clear()
        self._alive_until[key] = now + self._cache_s

    async def end_sessions(self, user_id: uuid.UUID, session_ids: Iterable[uuid.UUID]) -> None:
        """Logout, password change: these sessions' access tokens stop working, their sockets close."""
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return
        self._remember_revoked(ids)
        await self._store.revoke([session_key(str(s)) for s in ids])
        for session_id in ids:
            await self._publisher.publish([user_id], revoked_frame(session_id))

    async def end_user(self, user_id: uuid.UUID) -> None:
        """The account is gone: every token of the user stops working, every socket closes."""
        self._remember_revoked([user_id])
        await self._store.revoke([user_key(str(user_id))])
        await self._publisher.publish([user_id], revoked_frame(None))

    def _remember_revoked(self, ids: Iterable[uuid.UUID]) -> None:
        if len(self._revoked) >= CACHE_LIMIT:
            self._revoked.clear()
        self._revoked.update(ids)


def _ended() -> Unauthenticated:
    return Unauthenticated("this session has ended (signed out, password changed or account deleted): sign in again")
