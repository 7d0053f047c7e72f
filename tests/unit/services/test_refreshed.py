"""Refreshed: one load per interval, one load in flight."""

from __future__ import annotations

import asyncio

from messenger.services.refreshed import Refreshed


class Loads:
    def __init__(self) -> None:
        self.count = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> int:
        self.count += 1
        await self.gate.wait()
        return self.count


async def test_two_calls_within_the_interval_load_once() -> None:
    now = [0.0]
    loads = Loads()
    value = Refreshed(loads, 5.0, clock=lambda: now[0])
    assert await value.get() == 1
    now[0] = 4.9
    assert await value.get() == 1
    now[0] = 5.0
    assert await value.get() == 2
    assert loads.count == 2


async def test_callers_during_a_refresh_share_it() -> None:
    loads = Loads()
    loads.gate.clear()
    value = Refreshed(loads, 5.0)
    waiting = [asyncio.ensure_future(value.get()) for _ in range(10)]
    await asyncio.sleep(0)
    loads.gate.set()
    assert await asyncio.gather(*waiting) == [1] * 10
    assert loads.count == 1
