"""Open-loop load: requests on a fixed schedule, latency from the scheduled send time.

A closed-loop generator waits for each answer before the next request, so a stalled server
slows the generator down and hides the stall (coordinated omission). Here request i of a step
is due at `start + i / rate` whatever happened before; its latency runs from that due time to
the answer, so time spent queued for a free connection or in the server's backlog counts.
Latencies go into an HDR histogram (hdrhistogram, microseconds, 3 significant digits).

`connections` keep-alive connections are opened first and taken first in, first out, so all
of them carry requests. The mix is the seed's 80/20: 80 % GET by id of known users, 20 %
create. Each step is reported with its percentiles and success, and `best_rate` is the
highest arrival rate whose p99 is under the goal with every request successful.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
from hdrh.histogram import HdrHistogram

from messenger.bench.loadgen import Connection, RequestFailed, raise_fd_limit
from messenger.bench.phase import LatencySummary
from messenger.bench.scenarios import USERS

CONNECT_CONCURRENCY = 256
READ_SHARE = 0.80
P99_GOAL_MS = 15.0
HIGHEST_US = 120_000_000
"""Largest latency the histogram holds (two minutes, in µs)."""


@dataclass(frozen=True)
class OpenLoopStep:
    rate: float
    """Scheduled arrivals per second."""
    fraction: float | None
    """The rate as a fraction of the closed-loop maximum measured first."""
    connections: int
    connected: int
    sent: int
    ok: int
    achieved_rps: float
    """Successful answers per second of the step's schedule."""
    success_pct: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_histogram() -> HdrHistogram:
    """Latencies in microseconds, up to HIGHEST_US, 3 significant digits."""
    return HdrHistogram(1, HIGHEST_US, 3)


async def on_schedule(
    rate: float, total: int, fire: Callable[[float], Awaitable[None]], *, wait_s: float, errors: Counter[str]
) -> None:
    """Start `fire(due)` for request i at `due = start + i / rate`, whatever the ones before
    did; then wait up to `wait_s` for the last ones, and count those still running as
    `unfinished` (cancelled).

    The generator's garbage collector is paused meanwhile: its full collections took up to
    250 ms here (10,000 connections, histograms), and every request due in one was sent late
    and counted against the server."""
    tasks: list[asyncio.Task[None]] = []
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter() + 0.05
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(fire(due)))
        await asyncio.wait(tasks, timeout=wait_s)
    finally:
        gc.enable()
    for task in tasks:
        if not task.done():
            task.cancel()
            errors["unfinished"] += 1


async def open_connections(
    host: str, port: int, count: int, timeout: float, errors: Counter[str]
) -> asyncio.Queue[Connection]:
    """`count` keep-alive connections, opened `CONNECT_CONCURRENCY` at a time, queued to be
    taken first in, first out; each that fails to open counts as a `connect` error."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> None:
        conn = Connection(host, port, timeout)
        try:
            async with gate:
                await conn.open()
        except RequestFailed:
            errors["connect"] += 1
            return
        idle.put_nowait(conn)

    await asyncio.gather(*(connect() for _ in range(count)))
    return idle


async def run_open_loop_step(
    host: str,
    port: int,
    known_ids: Sequence[str],
    *,
    connections: int,
    rate: float,
    duration: float,
    timeout: float = 10.0,
    fraction: float | None = None,
    seed: int = 0,
) -> OpenLoopStep:
    if not known_ids:
        raise ValueError("the open-loop mix needs existing user ids")
    raise_fd_limit(connections + 1024)
    rng = random.Random(seed)
    histogram = new_histogram()
    errors: Counter[str] = Counter()
    idle = await open_connections(host, port, connections, timeout, errors)
    connected = idle.qsize()
    ok = 0

    async def fire(due: float) -> None:
        nonlocal ok
        read = rng.random() < READ_SHARE
        conn = await idle.get()
        try:
            if not conn.is_open:
                await conn.open()
            if read:
                response = await conn.request("GET", f"{USERS}/{rng.choice(known_ids)}")
                expected = 200
            else:
                body = msgspec.json.encode({"first_name": "Open", "last_name": "Loop"})
                response = await conn.request("POST", USERS, body)
                expected = 201
        except RequestFailed as failure:
            errors[failure.kind] += 1
            return
        finally:
            idle.put_nowait(conn)
        histogram.record_value(max(1, int((time.perf_counter() - due) * 1e6)))
        if response.status == expected:
            ok += 1
        else:
            errors[f"status {response.status}"] += 1

    total = max(1, int(rate * duration))
    try:
        await on_schedule(rate, total, fire, wait_s=timeout + 5, errors=errors)
    finally:
        while not idle.empty():
            idle.get_nowait().close()
    latency = LatencySummary.of_histogram(histogram)
    return OpenLoopStep(
        rate=rate,
        fraction=fraction,
        connections=connections,
        connected=connected,
        sent=total,
        ok=ok,
        achieved_rps=ok / duration if duration else 0.0,
        success_pct=100.0 * ok / total,
        p50_ms=latency.p50_ms,
        p95_ms=latency.p95_ms,
        p99_ms=latency.p99_ms,
        p999_ms=latency.p999_ms,
        max_ms=latency.max_ms,
        errors=dict(errors),
    )


def best_rate(steps: Sequence[dict[str, Any]], goal_ms: float = P99_GOAL_MS) -> float | None:
    """The highest scheduled rate with p99 under the goal and 100 % success."""
    good = [s["rate"] for s in steps if s["p99_ms"] < goal_ms and s["success_pct"] == 100.0]
    return max(good) if good else None
