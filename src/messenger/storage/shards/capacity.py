"""Per-pool admission: how many calls of one worker may use a shard's pool at once.

A call first waits here for a permit (one per pooled connection), and only then starts the
clock that detects a dead server. Waiting for a permit means the worker is busy, not that the
shard is down: it has its own, longer bound, and the circuit breakers never count it. Once a
call holds a permit its pool has a connection free (or room to open one), so anything slow
after that is the server's (or PgBouncer's) doing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class CapacityTimeout(Exception):
    """No permit became free within the wait bound."""


class Capacity:
    """A FIFO counting semaphore whose waiters can be failed all at once.

    Unlike asyncio.Semaphore, `reject_waiting` lets the router fail every queued call the
    moment its shard's breaker opens, instead of letting them queue behind calls that are
    stuck on a dead server. Used from one event loop only.
    """

    __slots__ = ("_free", "_waiters", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def try_acquire(self) -> bool:
        """Take a permit if one is free and nobody queues for it; never waits."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self, timeout: float) -> None:
        """Take a permit, queueing in arrival order for up to `timeout` seconds."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except (TimeoutError, asyncio.CancelledError) as exc:
            if not waiter.done():
                # Left in the queue, cancelled: release() skips it (removing it would cost a
                # scan of the queue, which is long exactly when callers time out).
                waiter.cancel()
            elif not waiter.cancelled() and waiter.exception() is None:
                self.release()  # granted just as its caller gave up: pass the permit on
            if isinstance(exc, TimeoutError):
                raise CapacityTimeout from None
            raise

    def release(self) -> None:
        """Give a permit back: straight to the longest waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the permit changes hands; _free stays as it is
                return
        self._free += 1

    def reject_waiting(self, error: Callable[[], BaseException]) -> None:
        """Fail every queued caller with a fresh `error()` (the shard behind this pool went
        down); each gets its own exception, since callers add details to theirs."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error())
