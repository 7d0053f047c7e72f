"""Background work every deployment runs: the outbox relay, the claims sweeper, the pruner.

Runs inside each API worker (several at once are safe: the relay takes a per-shard advisory
lock, the sweeper's effects are idempotent) or alone as `messenger relay`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from messenger.storage.claims import ClaimStore
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.retention import Retention, RetentionPruner
from messenger.storage.shards.transactions import ShardTransactions

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 30.0
PRUNE_EVERY_S = 600.0


class BackgroundWork:
    def __init__(
        self, shards: ShardTransactions, *, idle_interval_s: float = 0.1,
        retention: Retention | None = None,
    ) -> None:
        self.relay = OutboxRelay(shards, HANDLERS)
        self.claims = ClaimStore(shards)
        self.pruner = RetentionPruner(shards, retention or Retention())
        self._idle_interval_s = idle_interval_s
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.relay.run_forever(self._idle_interval_s, self._stop), name="relay"),
            asyncio.create_task(self._sweep_forever(), name="claims-sweeper"),
            asyncio.create_task(self._prune_forever(), name="retention-pruner"),
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

    async def _sweep_forever(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                counts = await self.claims.sweep()
                if any(counts.values()):
                    log.info("claims sweeper: %s", counts)
            except Exception as exc:  # a shard down: its claims wait for the next round
                log.warning("claims sweeper: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SWEEP_EVERY_S - (time.monotonic() - started))

    async def _prune_forever(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                counts = await self.pruner.prune_once()
                if any(counts.values()):
                    log.info("retention pruner: %s", counts)
            except Exception as exc:  # a shard down (or a fenced range): the next round retries
                log.warning("retention pruner: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PRUNE_EVERY_S - (time.monotonic() - started))
