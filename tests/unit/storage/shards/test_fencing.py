"""Store methods replayed when the resharding fence refused their transaction."""

from __future__ import annotations

import pytest

from messenger.domain.errors import RangeMoved
from messenger.storage.shards import fencing
from messenger.storage.shards.fencing import FROZEN_GIVE_UP_S, frozen_waits, replayed_when_fenced


class Store:
    def __init__(self, refusals: list[RangeMoved]) -> None:
        self.refusals = refusals
        self.calls = 0

    @replayed_when_fenced
    async def write(self, value: str) -> str:
        self.calls += 1
        if self.refusals:
            raise self.refusals.pop(0)
        return value


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(fencing.asyncio, "sleep", sleep)
    return slept


async def test_a_frozen_range_is_waited_out_and_the_transaction_runs_again(no_sleeping: list[float]) -> None:
    store = Store([RangeMoved("shard_1", frozen=True), RangeMoved("shard_1", frozen=True)])
    assert await store.write("x") == "x"
    assert store.calls == 3 and no_sleeping == frozen_waits()[:2]


async def test_a_range_frozen_past_the_bound_reaches_the_caller(no_sleeping: list[float]) -> None:
    waits = frozen_waits()
    store = Store([RangeMoved("shard_1", frozen=True) for _ in range(len(waits) + 1)])
    with pytest.raises(RangeMoved):
        await store.write("x")
    assert store.calls == len(waits) + 1 and sum(no_sleeping) == pytest.approx(FROZEN_GIVE_UP_S)


async def test_a_range_not_owned_is_replayed_once_on_the_adopted_ring(no_sleeping: list[float]) -> None:
    assert await Store([RangeMoved("shard_1")]).write("x") == "x"
    twice = Store([RangeMoved("shard_1"), RangeMoved("shard_2")])
    with pytest.raises(RangeMoved):
        await twice.write("x")
    assert twice.calls == 2 and not no_sleeping
