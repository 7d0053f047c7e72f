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
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
from hdrh.histogram import HdrHistogram

from messenger.bench.loadgen import Connection, RequestFailed, raise_fd_limit
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
    histogram = HdrHistogram(1, HIGHEST_US, 3)
    errors: Counter[str] = Counter()
    idle = await open_connections(host, port, connections, timeout, errors)
    connected = idle.qsize()
    ok = 0

    async def fire(due: float, read: bool) -> None:
        nonlocal ok
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
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fire(due, rng.random() < READ_SHARE)))
    await asyncio.wait(tasks, timeout=timeout + 5)
    for task in tasks:
        if not task.done():
            task.cancel()
            errors["unfinished"] += 1
    while not idle.empty():
        idle.get_nowait().close()

    def ms(percentile: float) -> float:
        return float(histogram.get_value_at_percentile(percentile)) / 1000

    return OpenLoopStep(
        rate=rate,
        fraction=fraction,
        connections=connections,
        connected=connected,
        sent=total,
        ok=ok,
        achieved_rps=ok / duration if duration else 0.0,
        success_pct=100.0 * ok / total,
        p50_ms=ms(50),
        p95_ms=ms(95),
        p99_ms=ms(99),
        p999_ms=ms(99.9),
        max_ms=float(histogram.get_max_value()) / 1000,
        errors=dict(errors),
    )


def best_rate(steps: Sequence[dict[str, Any]], goal_ms: float = P99_GOAL_MS) -> float | None:
    """The highest scheduled rate with p99 under the goal and 100 % success."""
    good = [s["rate"] for s in steps if s["p99_ms"] < goal_ms and s["success_pct"] == 100.0]
    return max(good) if good else None
