"""Revoked sessions and users in Redis, shared by every worker: one key per revocation that
lives as long as an access token could (the tokens it revokes die of old age after that).

`rv:s:<session id>`: a session ended (logout, password change). `rv:u:<user id>`: the user is
gone (account deleted). A check is one MGET of both keys.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_ERRORS = (RedisError, OSError)


def session_key(session_id: str) -> str:
    return f"rv:s:{session_id}"


def user_key(user_id: str) -> str:
    return f"rv:u:{user_id}"


class RevocationStore:
    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def revoke(self, keys: list[str]) -> bool:
        """Record the revocations; False (logged) when Redis did not take them, twice."""
        for attempt in (1, 2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.set(key, b"1", ex=self.ttl_s)
                    await pipe.execute()
                return True
            except _ERRORS as exc:
                log.warning("revocation %s not stored (attempt %d): %s", keys, attempt, exc)
        return False

    async def any_revoked(self, keys: list[str]) -> bool | None:
        """True if any of `keys` is revoked; None when Redis cannot say."""
        try:
            found = await self._redis.mget(keys)
        except _ERRORS as exc:
            log.warning("revocations not checked: %s", exc)
            return None
        return any(value is not None for value in found)
