"""A lean HTTP/1.1 keep-alive load generator on raw asyncio streams.

General clients (httpx, aiohttp) spend more CPU per request than the server under test, and on
a 2-core machine the generator and the server share the same cores. This one does the least a
validating client can: one persistent connection per virtual user, a pre-formatted request head,
a response parser that only looks at the status line, Content-Length and chunking, and latency
recorded into flat arrays. Its own CPU time is measured (`CpuMeter`) and reported beside the
results, so a reader can see how much of the machine the measurement itself took.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

ERROR_KINDS = ("connect", "timeout", "protocol", "status", "validation")
"""connect: could not open a connection; timeout: no full response in time; protocol: the
connection broke or the bytes were not HTTP; status: unexpected status; validation: the body
did not have the expected shape or content."""


class RequestFailed(Exception):
    """One request failed; `kind` is one of ERROR_KINDS."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(slots=True)
class Response:
    status: int
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection; not shared between tasks."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_header = f"Host: {host}:{port}\r\n"

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=1 << 20), self.timeout
            )
        except TimeoutError:
            raise RequestFailed("connect", "timed out") from None
        except OSError as exc:
            raise RequestFailed("connect", exc.strerror or str(exc)) from None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: str = ""
    ) -> Response:
        """Send one request and read its response; on any failure the connection is closed.

        `headers`: extra header lines, pre-formatted, each ending in CRLF (e.g. Authorization).
        """
        if self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        if body is None:
            head = f"{method} {path} HTTP/1.1\r\n{self._host_header}{headers}\r\n"
            self._writer.write(head.encode())
        else:
            head = (
                f"{method} {path} HTTP/1.1\r\n{self._host_header}{headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            self._writer.write(head.encode() + body)
        try:
            return await asyncio.wait_for(self._read_response(), self.timeout)
        except TimeoutError:
            self.close()
            raise RequestFailed("timeout", f"{method} {path}") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            raise RequestFailed("protocol", f"{method} {path}: {e!r}") from None

    async def _read_response(self) -> Response:
        assert self._reader is not None
        reader = self._reader
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x response")
        status = int(head[9:12])
        lower = head.lower()
        body = b""
        if (at := lower.find(b"\r\ncontent-length:")) >= 0:
            end = lower.index(b"\r\n", at + 2)
            length = int(lower[at + 17 : end])
            if length:
                body = await reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._read_chunked(reader)
        if b"\r\nconnection: close" in lower:
            self.close()
        return Response(status, body)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)


@dataclass
class Recorder:
    """Latencies per operation and per-second outcome counts for one load phase."""

    started: float = field(default_factory=time.perf_counter)
    latencies: dict[str, array[float]] = field(default_factory=dict)
    """Seconds, per operation, for every request that got a complete response."""
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    samples: dict[str, str] = field(default_factory=dict)
    """One example message per error kind, for the report."""
    ok_per_second: list[int] = field(default_factory=list)
    errors_per_second: list[int] = field(default_factory=list)

    def _second(self, now: float) -> int:
        sec = int(now - self.started)
        while len(self.ok_per_second) <= sec:
            self.ok_per_second.append(0)
            self.errors_per_second.append(0)
        return sec

    def success(self, op: str, latency: float, now: float) -> None:
        lat = self.latencies.get(op)
        if lat is None:
            lat = self.latencies[op] = array("d")
        lat.append(latency)
        self.ok_per_second[self._second(now)] += 1

    def failure(self, op: str, failure: RequestFailed, latency: float | None, now: float) -> None:
        self.errors[failure.kind] = self.errors.get(failure.kind, 0) + 1
        self.samples.setdefault(failure.kind, f"{op}: {failure.detail}"[:300])
        if latency is not None:
            lat = self.latencies.get(op)
            if lat is None:
                lat = self.latencies[op] = array("d")
            lat.append(latency)
        self.errors_per_second[self._second(now)] += 1

    @property
    def ok(self) -> int:
        return sum(self.ok_per_second)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True, slots=True)
class CpuSample:
    process_s: float
    machine_busy_s: float
    wall_s: float
    server_s: float | None = None
    """CPU of the server's process group (all its workers), when we started the server."""


class CpuMeter:
    """CPU used by this process, by the server under test, and by the whole machine.

    The machine figure includes anything else running (databases, other users of the box), so
    the generator-vs-server split, when the server's process group is known, is the cleaner one.
    """

    def __init__(self, server_group: int | None = None) -> None:
        self._server_group = server_group
        self._start = self._now()

    def _now(self) -> tuple[float, float, float, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        server = process_group_cpu_seconds(self._server_group) if self._server_group else 0.0
        return (ru.ru_utime + ru.ru_stime, _machine_busy_seconds(), time.perf_counter(), server)

    def stop(self) -> CpuSample:
        end = self._now()
        process, machine, wall, server = (b - a for a, b in zip(self._start, end, strict=True))
        return CpuSample(process, machine, wall, server if self._server_group else None)


def process_group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group, from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid:  # fields[0] is the state; pgrp is the 5th field overall
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


TickCallback = Callable[[Recorder, float], None]
"""Called about twice a second with the recorder and the elapsed fraction of the phase."""


async def drive(
    make_user_loop: Callable[[int, float], Awaitable[None]],
    connections: int,
    duration: float,
    recorder: Recorder,
    on_tick: TickCallback | None = None,
) -> float:
    """Run `connections` virtual-user loops until `duration` seconds have passed.

    Each loop receives its number and the deadline (perf_counter time) and must return once
    the deadline passes. Returns the measured wall time, from start until the last loop ended.
    """
    started = time.perf_counter()
    recorder.started = started
    deadline = started + duration
    tasks = [asyncio.ensure_future(make_user_loop(i, deadline)) for i in range(connections)]
    ticker = None
    if on_tick is not None:

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.5)
                on_tick(recorder, min(1.0, (time.perf_counter() - started) / duration))

        ticker = asyncio.ensure_future(tick())
    try:
        await asyncio.gather(*tasks)
    finally:
        if ticker is not None:
            ticker.cancel()
        for t in tasks:
            t.cancel()
    return time.perf_counter() - started
