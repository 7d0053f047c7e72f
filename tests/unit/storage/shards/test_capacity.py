"""Per-pool admission: FIFO permits, a wait bound, and failing every waiter at once."""

from __future__ import annotations

import asyncio

import pytest

from messenger.storage.shards.capacity import Capacity, CapacityTimeout


async def test_permits_are_taken_without_waiting_while_free() -> None:
    capacity = Capacity(2)
    await capacity.acquire(0.01)
    await capacity.acquire(0.01)
    assert capacity.in_use == 2 and not capacity.try_acquire()


async def test_waiters_get_released_permits_in_arrival_order() -> None:
    capacity = Capacity(1)
    await capacity.acquire(1)
    order: list[int] = []

    async def wait(n: int) -> None:
        await capacity.acquire(5)
        order.append(n)

    tasks = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert capacity.waiting == 3
    for _ in range(3):
        capacity.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and capacity.in_use == 1


async def test_a_wait_beyond_the_bound_raises_and_leaves_the_permits_as_they_were() -> None:
    capacity = Capacity(1)
    await capacity.acquire(1)
    with pytest.raises(CapacityTimeout):
        await capacity.acquire(0.01)
    assert capacity.waiting == 0
    capacity.release()
    assert capacity.in_use == 0 and capacity.try_acquire()


async def test_a_cancelled_waiter_does_not_swallow_a_permit() -> None:
    capacity = Capacity(1)
    await capacity.acquire(1)
    waiter = asyncio.create_task(capacity.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    capacity.release()
    assert capacity.in_use == 0


async def test_reject_waiting_fails_each_waiter_with_its_own_error() -> None:
    capacity = Capacity(1)
    await capacity.acquire(1)
    waiters = [asyncio.create_task(capacity.acquire(5)) for _ in range(2)]
    await asyncio.sleep(0)
    capacity.reject_waiting(lambda: RuntimeError("shard down"))
    errors = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(e, RuntimeError) for e in errors) and errors[0] is not errors[1]
    assert capacity.in_use == 1  # the holder keeps its permit
