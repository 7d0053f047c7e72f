"""The resharding fence as a caller of the shards sees it (migration 0006, docs/resharding.md).

A shard refuses a write whose row's `ring_pos` lies in a range listed in its `ring_fence`:

- `MF001`, not owned (`moved` or `incoming`): the writer's topology is stale. The answer is to
  reload the topology file, adopt it and send the statement to the shard the new ring names.
- `MF002`, frozen: a switch of that range is in progress and takes about as long as the target
  needs to apply the source's last LSN (well under a second when it keeps up). The answer is
  to wait a little and retry on the same shard.

Both are answers of a healthy server, never failures: they do not count on a breaker.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import psycopg

from messenger.domain.errors import RangeMoved

P = ParamSpec("P")
T = TypeVar("T")

NOT_OWNED = "MF001"
FROZEN = "MF002"

FROZEN_FIRST_WAIT_S = 0.05
FROZEN_MAX_WAIT_S = 0.2
FROZEN_GIVE_UP_S = 3.0
"""A write to a frozen range retries after 50 ms, doubling to 200 ms, for up to 3 s in all; a
switch that holds writes longer than that becomes a 503 the client retries."""

def fence_state(exc: BaseException) -> str | None:
    """NOT_OWNED or FROZEN if `exc` is the fence's refusal, else None."""
    if isinstance(exc, psycopg.Error):
        sqlstate = exc.sqlstate
        if sqlstate in (NOT_OWNED, FROZEN):
            return sqlstate
    return None


def frozen_waits() -> list[float]:
    """The pauses before each retry of a write to a frozen range, summing to FROZEN_GIVE_UP_S."""
    waits: list[float] = []
    wait, total = FROZEN_FIRST_WAIT_S, 0.0
    while total + wait < FROZEN_GIVE_UP_S:
        waits.append(wait)
        total += wait
        wait = min(wait * 2, FROZEN_MAX_WAIT_S)
    waits.append(FROZEN_GIVE_UP_S - total)
    return waits


def replayed_when_fenced(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """For a store method whose whole effect is one transaction: when the fence refuses it
    (the transaction rolled back, nothing was written), run it again, as single writes are.
    Frozen: after the same growing pauses, up to FROZEN_GIVE_UP_S. Not owned: once, on the
    shard the adopted topology names. Then the RangeMoved goes to the client."""

    @functools.wraps(method)
    async def replaying(*args: P.args, **kwargs: P.kwargs) -> T:
        waits = iter(frozen_waits())
        rerouted = False
        while True:
            try:
                return await method(*args, **kwargs)
            except RangeMoved as exc:
                if not exc.frozen:
                    if rerouted:
                        raise
                    rerouted = True
                    continue
                pause = next(waits, None)
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    return replaying
