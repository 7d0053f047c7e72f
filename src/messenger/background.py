"""Background work every deployment runs: the outbox relay, the claims sweeper, the pruner.

Runs inside each API worker (several at once are safe: the relay takes a per-shard advisory
lock, the sweeper's effects are idempotent) or alone as `messenger relay`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

from messenger.storage.claims import ClaimStore
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import AfterApplied, OutboxRelay
from messenger.storage.retention import Retention, RetentionPruner
from messenger.storage.shards.transactions import ShardTransactions

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 30.0
PRUNE_EVERY_S = 600.0


class BackgroundWork:
    def __init__(
        self, shards: ShardTransactions, *, idle_interval_s: float = 0.1,
        retention: Retention | None = None,
        applied: AfterApplied | None = None,
    ) -> None:
        self.relay = OutboxRelay(shards, HANDLERS, applied=applied)
        self.claims = ClaimStore(shards)
        self.pruner = RetentionPruner(shards, retention or Retention())
        self._idle_interval_s = idle_interval_s
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.relay.run_forever(self._idle_interval_s, self._stop), name="relay"),
            asyncio.create_task(self._every("claims sweeper", SWEEP_EVERY_S, self.claims.sweep), name="claims-sweeper"),
            asyncio.create_task(
                self._every("retention pruner", PRUNE_EVERY_S, self.pruner.prune_once), name="retention-pruner"
            ),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Run until cancelled (the standalone relay process)."""
        self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def _every(self, what: str, period_s: float, step: Callable[[], Awaitable[dict[str, int]]]) -> None:
        """Run `step` every `period_s` until stopped; a failed round (a shard down, a fenced
        range) is logged and the next round retries."""
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                counts = await step()
                if any(counts.values()):
                    log.info("%s: %s", what, counts)
            except Exception as exc:
                log.warning("%s: %s", what, exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), period_s - (time.monotonic() - started))
