"""Password hashing with argon2id, off the event loop.

Parameters for this machine (2 cores): time_cost=2, memory_cost=19 MiB, parallelism=1 (the
OWASP minimum for argon2id) costs about 28 ms of one core per hash here, so a burst of sign-ins
cannot starve a worker's other requests: hashing runs in a small thread pool (argon2-cffi
releases the GIL) while the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1


class Passwords:
    def __init__(self, *, threads: int = 2, time_cost: int = TIME_COST, memory_cost: int = MEMORY_COST_KIB) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=PARALLELISM)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        # Verified against when the account does not exist, so that an unknown user costs
        # as long as a wrong password and the two cannot be told apart by timing.
        self._decoy = self._hasher.hash("decoy password, never valid")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches; with no stored hash, burns the same time and says False."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._verify, stored_hash, password
        )

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._decoy, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
