"""One load phase: a scenario at one concurrency level for a bounded time, and its summary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from messenger.bench.loadgen import (
    Connection,
    CpuMeter,
    CpuSample,
    Recorder,
    RequestFailed,
    TickCallback,
    drive,
    raise_fd_limit,
)
from messenger.bench.scenarios import Scenario, StepAborted, VirtualUser

CONNECT_CONCURRENCY = 256
"""Connections opened at once: more overflows the server's accept backlog for no gain."""
CONNECT_RETRY_PAUSE_S = 0.05


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Target:
        rest = url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.partition(":")
        return cls(host or "127.0.0.1", int(port.split("/")[0]) if port else 80)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        if not seconds:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ordered = sorted(seconds)
        n = len(ordered)

        def pct(p: float) -> float:
            return ordered[min(n - 1, max(0, round(p * n + 0.5) - 1))] * 1000

        return cls(
            count=n,
            mean_ms=sum(ordered) / n * 1000,
            p50_ms=pct(0.50),
            p95_ms=pct(0.95),
            p99_ms=pct(0.99),
            p999_ms=pct(0.999),
            max_ms=ordered[-1] * 1000,
        )

    @classmethod
    def of_histogram(cls, histogram: HdrHistogram) -> LatencySummary:
        """From an HDR histogram of microseconds."""
        def ms(percentile: float) -> float:
            return float(histogram.get_value_at_percentile(percentile)) / 1000

        return cls(
            count=int(histogram.get_total_count()),
            mean_ms=float(histogram.get_mean_value()) / 1000,
            p50_ms=ms(50),
            p95_ms=ms(95),
            p99_ms=ms(99),
            p999_ms=ms(99.9),
            max_ms=float(histogram.get_max_value()) / 1000,
        )


@dataclass(frozen=True)
class PhaseResult:
    scenario: str
    connections: int
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    error_samples: dict[str, str]
    rps: float
    """Successful requests per second."""
    success_pct: float
    latency: LatencySummary
    by_operation: dict[str, LatencySummary]
    ops_rps: dict[str, float]
    """Completed requests per second per operation (get, create, ...)."""
    ok_per_second: list[int]
    errors_per_second: list[int]
    generator_cpu_s: float
    machine_busy_cpu_s: float
    generator_cpu_share: float
    """Generator CPU / CPU the whole machine used in the phase (server, databases, generator)."""
    generator_core_share: float
    """Generator CPU / (wall time x cores): how much of the machine's capacity it took."""
    server_cpu_s: float | None = None
    """CPU of the server's processes in the phase, when the harness started the server."""
    generator_vs_server: float | None = None
    """Generator CPU / (generator + server CPU): the generator's part of the HTTP work."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(
    scenario: str, connections: int, wall: float, recorder: Recorder, cpu: CpuSample
) -> PhaseResult:
    all_latencies = [x for arr in recorder.latencies.values() for x in arr]
    ok, failed = recorder.ok, recorder.failed
    total = ok + failed
    cores = os.cpu_count() or 1
    return PhaseResult(
        scenario=scenario,
        connections=connections,
        duration_s=wall,
        requests=total,
        ok=ok,
        errors={k: v for k, v in recorder.errors.items()},
        error_samples=dict(recorder.samples),
        rps=ok / wall if wall > 0 else 0.0,
        success_pct=100.0 * ok / total if total else 0.0,
        latency=LatencySummary.of(all_latencies),
        by_operation={op: LatencySummary.of(arr) for op, arr in recorder.latencies.items()},
        ops_rps={op: len(arr) / wall for op, arr in recorder.latencies.items()} if wall else {},
        ok_per_second=list(recorder.ok_per_second),
        errors_per_second=list(recorder.errors_per_second),
        generator_cpu_s=cpu.process_s,
        machine_busy_cpu_s=cpu.machine_busy_s,
        generator_cpu_share=cpu.process_s / cpu.machine_busy_s if cpu.machine_busy_s else 0.0,
        generator_core_share=cpu.process_s / (cpu.wall_s * cores) if cpu.wall_s else 0.0,
        server_cpu_s=cpu.server_s,
        generator_vs_server=(
            cpu.process_s / (cpu.process_s + cpu.server_s) if cpu.server_s else None
        ),
    )


async def run_phase(
    target: Target,
    scenario: Scenario,
    connections: int,
    duration: float,
    known_ids: Sequence[str],
    *,
    timeout: float = 10.0,
    think_time: float = 0.0,
    seed: int = 0,
    on_tick: TickCallback | None = None,
    server_group: int | None = None,
) -> PhaseResult:
    """Open `connections` keep-alive connections and run `scenario` on each until time is up.

    Virtual users run closed-loop (next iteration as soon as the last ends) unless `think_time`
    adds a pause, which turns a connection count into a user count with a realistic request rate.
    """
    if scenario.needs_known_ids and not known_ids:
        raise ValueError(f"scenario {scenario.name} needs existing user ids and none were found")
    raise_fd_limit(connections + 1024)
    recorder = Recorder()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    base = random.Random(seed)

    async def user_loop(number: int, deadline: float) -> None:
        vu = VirtualUser(
            number=number,
            conn=Connection(target.host, target.port, timeout),
            recorder=recorder,
            known_ids=known_ids,
            rng=random.Random(base.getrandbits(64)),
        )
        await run_virtual_user(vu, scenario, deadline, gate, think_time)

    meter = CpuMeter(server_group)
    wall = await drive(user_loop, connections, duration, recorder, on_tick)
    return summarise(scenario.name, connections, wall, recorder, meter.stop())


async def run_virtual_user(
    vu: VirtualUser, scenario: Scenario, deadline: float, gate: asyncio.Semaphore, think_time: float
) -> None:
    """One connection's loop until the deadline: (re)connect through `gate`, run the
    scenario's step, pause for the think time; failures are the recorder's, never fatal."""
    try:
        while time.perf_counter() < deadline:
            if not vu.conn.is_open:
                try:
                    async with gate:
                        await vu.conn.open()
                except RequestFailed as failure:
                    vu.recorder.failure("connect", failure, None, time.perf_counter())
                    await asyncio.sleep(CONNECT_RETRY_PAUSE_S)
                    continue
            with contextlib.suppress(StepAborted):
                await scenario.step(vu)
            if think_time:
                await asyncio.sleep(think_time * (0.5 + vu.rng.random()))
    finally:
        vu.conn.close()
