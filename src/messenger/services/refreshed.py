"""A value read at most once per interval, however many requests want it.

The ops endpoints' figures (users per shard) cost a scan on every shard; serving each scrape
or dashboard poll from a fresh query let anyone holding the ops token load every shard at will.
Within `max_age_s` the last value is served; after it, one caller refreshes and the callers
that arrive meanwhile await that same refresh instead of starting their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Refreshed(Generic[T]):
    def __init__(
        self, load: Callable[[], Awaitable[T]], max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._clock = clock
        self._value: tuple[float, T] | None = None
        self._loading: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if self._value is not None and self._clock() - self._value[0] < self._max_age_s:
            return self._value[1]
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._loading)

    async def _refresh(self) -> T:
        try:
            value = await self._load()
            self._value = (self._clock(), value)
            return value
        finally:
            self._loading = None
