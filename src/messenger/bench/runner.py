"""A whole benchmark run: cluster, server, scenarios at each level, ceilings, report."""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import uvloop

from messenger.bench import ceilings, report, round_trips
from messenger.bench.loadgen import Connection, Recorder, RequestFailed
from messenger.bench.messaging import SetupFailed, run_messaging_phase
from messenger.bench.messaging_open_loop import SEND_FRACTION, run_messaging_open_loop, summary_line
from messenger.bench.open_loop import best_rate, run_open_loop_step
from messenger.bench.phase import PhaseResult, Target, run_phase
from messenger.bench.profile import ServerProfiler
from messenger.bench.scenarios import SCENARIOS, USERS
from messenger.bench.server import ServerProcess, api_command, free_port, granian_command
from messenger.bench.wrk import wrk_rps
from messenger.cluster.daemon import port_is_free
from messenger.cluster.layout import ClusterLayout
from messenger.cluster.local import LocalCluster
from messenger.storage.bulk.distribution import measure_distribution
from messenger.storage.bulk.seed import seed_users
from messenger.storage.migrator import migrate
from messenger.topology import Topology, load_topology

DEFAULT_SCENARIOS = (
    "crud",
    "read",
    "create",
    "read-heavy",
    "write-heavy",
    "browse",
    "mixed",
    "messaging",
)
DEFAULT_LEVELS = (100, 1_000, 10_000)
SMOKE_SCENARIOS = (
    "smoke",
    "crud",
    "read",
    "create",
    "read-heavy",
    "browse",
    "mixed",
    "messaging",
)
PAUSE_BETWEEN_PHASES_S = 1.0
SAMPLE_IDS = "SELECT id::text FROM users ORDER BY random() LIMIT %s"


class BenchError(Exception):
    """The run cannot start (missing cluster, server or tool)."""


@dataclass
class BenchConfig:
    scenarios: Sequence[str] = DEFAULT_SCENARIOS
    levels: Sequence[int] = DEFAULT_LEVELS
    duration: float = 30.0
    """Seconds per scenario and level."""
    out_root: Path = Path("var/bench")
    topology_path: Path | None = None
    """A running cluster; when neither this nor `url` is given, one is started."""
    url: str | None = None
    """A running server; when absent, one is started (`server` says which)."""
    server: str = "api"
    """api: `messenger serve`; fake: the in-memory API (no database, tests the harness)."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    shards: int = 5
    users: int = 100_000
    """Users the started cluster is seeded up to."""
    cluster_dir: Path = Path("var/bench/cluster")
    cluster_base_port: int = 47_000
    timeout: float = 10.0
    think_time: float = 0.0
    ceilings: bool = True
    ceiling_duration: float = 10.0
    pgbench_clients: int = 16
    sample_ids: int = 10_000
    profile: bool = False
    """Sample the server with py-spy during each phase; top frames go in the report."""
    bare: bool = True
    """Also serve the GET by id from the bare-stack yardstick (bare_app.py) and run the read
    scenario against it right after ours at each level (needs the real API and a cluster)."""
    open_loop: bool = False
    """After the phases: the closed-loop maximum of the 80/20 mix, then open-loop steps at
    `open_loop_fractions` of it with `open_loop_connections` open (open_loop.py)."""
    open_loop_connections: int = 10_000
    open_loop_fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9)
    sockets: int = 1_000
    """WebSockets open during the messaging scenario (delivery latency is measured on them)."""
    messaging_users: int = 250
    """Accounts the messaging scenario registers (per level); sockets go round-robin over them."""
    group_size: int = 5
    """Members per group conversation in the messaging scenario."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise BenchError(f"unknown scenario(s) {unknown}; known: {sorted(SCENARIOS)}")
        if not self.levels or min(self.levels) < 1:
            raise BenchError("concurrency levels must be positive")


def smoke_config(**overrides: Any) -> BenchConfig:
    """A short run that exercises every part of the harness (make bench-smoke)."""
    values: dict[str, Any] = {
        "scenarios": SMOKE_SCENARIOS,
        "levels": (50,),
        "duration": 3.0,
        "shards": 3,
        "users": 10_000,
        "ceiling_duration": 2.0,
        "pgbench_clients": 4,
        "sample_ids": 2_000,
        "sockets": 50,
        "messaging_users": 20,
    }
    return BenchConfig(**(values | overrides))


class RunObserver:
    """Hears about the run's progress; the CLI draws it, tests ignore it."""

    def note(self, message: str) -> None:
        """A step of the run started or finished."""

    def phase_started(self, label: str, seconds: float) -> None:
        """A load phase of about `seconds` began."""

    def phase_tick(self, recorder: Recorder, fraction: float) -> None:
        """About twice a second during a phase."""

    def phase_finished(self, result: PhaseResult) -> None:
        """A load phase ended."""


def _free_base_port(shards: int) -> int:
    """A base port whose whole block (primaries, replicas, PgBouncers, Redis) is free."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 50_000)
        layout = ClusterLayout(Path("."), shards, base)
        if all(port_is_free(p) for p in layout.all_ports()):
            return base
    raise BenchError("no free block of ports for the benchmark cluster")


def _start_cluster(config: BenchConfig, stack: ExitStack, observer: RunObserver) -> Topology:
    """Start (or restart) the benchmark's own cluster, migrate it, seed it up to `users`.

    The cluster lives in `config.cluster_dir` and is stopped, not destroyed, at the end, so the
    next run reuses its data instead of seeding again.
    """
    cluster = LocalCluster(config.cluster_dir, progress=observer.note)
    if cluster.exists and cluster.state.shards != config.shards:
        # Its own cluster, seeded data only: a run that asks for 5 shards must not measure the
        # 3 an earlier `--shards 3` left (it did, silently).
        observer.note(f"the cluster in {config.cluster_dir} has {cluster.state.shards} shards, "
                      f"this run asks for {config.shards}: making it afresh")
        cluster.destroy()
    if not cluster.exists:
        cluster = LocalCluster(
            config.cluster_dir,
            shards=config.shards,
            base_port=_free_base_port(config.shards),
            progress=observer.note,
        )
    observer.note(f"starting the {cluster.state.shards}-shard cluster in {config.cluster_dir}")
    stack.callback(cluster.down)
    topology = cluster.up()
    failed = [o for o in migrate(topology) if not o.ok]
    if failed:
        raise BenchError(f"migrations failed: {failed}")
    existing = sum(s.rows for s in measure_distribution(topology))
    if existing < config.users:
        observer.note(f"seeding {config.users - existing:,} users")
        result = seed_users(topology, config.users - existing)
        observer.note(f"seeded in {result.elapsed_s:.1f} s ({result.rows_per_second:,.0f} rows/s)")
    return topology


def _sample_ids_from_shards(topology: Topology, total: int) -> list[str]:
    per_shard = max(1, total // len(topology.shards))
    ids: list[str] = []
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, connect_timeout=5, prepare_threshold=None) as c:
            ids += [row[0] for row in c.execute(SAMPLE_IDS, (per_shard,)).fetchall()]
    return ids


async def _ids_from_api(target: Target, wanted: int, timeout: float) -> list[str]:
    """Existing ids read through the listing; a few created when the service is empty."""
    conn = Connection(target.host, target.port, timeout)
    ids: list[str] = []
    cursor = None
    try:
        while len(ids) < wanted:
            path = f"{USERS}?limit=100" + (f"&cursor={cursor}" if cursor else "")
            response = await conn.request("GET", path)
            if response.status != 200:
                break
            page = msgspec.json.decode(response.body)
            ids += [item["id"] for item in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        while len(ids) < min(wanted, 200):
            body = msgspec.json.encode({"first_name": "Seed", "last_name": f"User {len(ids)}"})
            response = await conn.request("POST", USERS, body)
            if response.status != 201:
                raise BenchError(f"cannot create users to read: {response.status}")
            ids.append(msgspec.json.decode(response.body)["id"])
    except RequestFailed as exc:
        raise BenchError(f"cannot read users from {target.url}: {exc}") from None
    finally:
        conn.close()
    return ids


def _run_async(coro: Any) -> Any:
    return uvloop.run(coro)


@dataclass(frozen=True)
class Yardstick:
    """The bare-stack server, run beside ours for the GET by id scenario."""

    target: Target
    group: int | None


BARE_SCENARIO = "read"
"""The scenario the bare stack also serves (GET /api/v1/users/{id})."""


def _account(result: PhaseResult, before: round_trips.RoundTrips | None, topology: Topology | None) -> None:
    """Server CPU and counted round trips per request of a finished phase, into its extra."""
    requests = max(result.requests, 1)
    if result.server_cpu_s is not None:
        result.extra["server_cpu_us_per_request"] = result.server_cpu_s * 1e6 / requests
    if before is not None and topology is not None:
        delta = round_trips.snapshot(topology) - before
        result.extra["db_round_trips_per_request"] = delta.database / requests
        result.extra["redis_round_trips_per_request"] = delta.redis / requests


def _users_phase(
    config: BenchConfig,
    target: Target,
    scenario: Any,
    level: int,
    ids: list[str],
    observer: RunObserver,
    server_group: int | None,
    topology: Topology | None,
    label: str,
) -> PhaseResult:
    observer.phase_started(f"{label} @ {level:,} connections", config.duration)
    before = round_trips.snapshot(topology) if topology is not None else None
    result: PhaseResult = _run_async(
        run_phase(
            target,
            scenario,
            level,
            config.duration,
            ids,
            timeout=config.timeout,
            think_time=config.think_time,
            on_tick=observer.phase_tick,
            server_group=server_group,
        )
    )
    _account(result, before, topology)
    return result


def _run_phases(
    config: BenchConfig,
    target: Target,
    ids: list[str],
    observer: RunObserver,
    server_group: int | None,
    run_dir: Path,
    topology: Topology | None = None,
    yardstick: Yardstick | None = None,
) -> list[PhaseResult]:
    results = []
    for name in config.scenarios:
        scenario = SCENARIOS[name]
        if scenario.kind == "messaging" and config.server == "fake" and config.url is None:
            observer.note(f"{name}: skipped, the fake server has no messaging API")
            continue
        for level in config.levels:
            profiler = None
            if config.profile and server_group is not None:
                profile_file = run_dir / f"profile-{name}-{level}.txt"
                profiler = ServerProfiler(server_group, config.duration, profile_file)
                if not profiler.start():
                    observer.note("py-spy not found: no server profile")
                    profiler = None
            if scenario.kind == "messaging":
                before = round_trips.snapshot(topology) if topology is not None else None
                result = _run_messaging(config, target, scenario, level, observer, server_group)
                _account(result, before, topology)
            else:
                result = _users_phase(
                    config, target, scenario, level, ids, observer, server_group, topology, name
                )
            if profiler is not None:
                result.extra["profile"] = profiler.finish()
            observer.phase_finished(result)
            results.append(result)
            time.sleep(PAUSE_BETWEEN_PHASES_S)
            if yardstick is not None and name == BARE_SCENARIO:
                bare = _users_phase(
                    config, yardstick.target, scenario, level, ids, observer, yardstick.group,
                    topology, "bare stack " + name,
                )
                bare = replace(bare, scenario=f"{name}-bare")
                observer.phase_finished(bare)
                results.append(bare)
                time.sleep(PAUSE_BETWEEN_PHASES_S)
    return results


def _run_messaging(
    config: BenchConfig,
    target: Target,
    scenario: Any,
    level: int,
    observer: RunObserver,
    server_group: int | None,
) -> PhaseResult:
    """Setup (accounts, groups, sockets) untimed, then the timed mix with delivery samples."""

    class Started:
        """Draws the progress bar only once the setup is done and the timed part begins."""

        def __init__(self) -> None:
            self.started = False

        def tick(self, recorder: Recorder, fraction: float) -> None:
            if not self.started:
                self.started = True
                label = f"{scenario.name} @ {level:,} connections, {config.sockets:,} sockets"
                observer.phase_started(label, config.duration)
            observer.phase_tick(recorder, fraction)

    progress = Started()
    try:
        result: PhaseResult = _run_async(
            run_messaging_phase(
                target,
                scenario,
                level,
                config.duration,
                sockets=config.sockets,
                users=config.messaging_users,
                group_size=config.group_size,
                timeout=config.timeout,
                think_time=config.think_time,
                on_tick=progress.tick,
                server_group=server_group,
                note=observer.note,
            )
        )
    except SetupFailed as exc:
        raise BenchError(f"messaging setup failed: {exc}") from None
    if not progress.started:
        observer.phase_started(scenario.name, config.duration)
    d = result.extra["delivery"]
    lat, e2e = d["latency"], d["from_send_start"]
    observer.note(
        f"delivery on {d['sockets']:,} sockets: {lat['count']:,} frames matched of "
        f"{d['expected']:,} expected; after send completed p50 {lat['p50_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms; from send start "
        f"p99 {e2e['p99_ms']:.1f} ms"
    )
    return result


def _empty_handler_ceiling(
    config: BenchConfig, run_dir: Path, observer: RunObserver
) -> list[dict[str, Any]]:
    port = free_port()
    out = []
    command = granian_command("messenger.bench.empty_app:app", port, config.workers)
    with ServerProcess(command, port, run_dir / "empty-server.log", ready_path="/") as server:
        target = Target("127.0.0.1", port)
        for level in config.levels:
            observer.phase_started(f"empty handler @ {level:,}", config.ceiling_duration)
            result = _run_async(
                run_phase(
                    target,
                    SCENARIOS["empty"],
                    level,
                    config.ceiling_duration,
                    [],
                    timeout=config.timeout,
                    on_tick=observer.phase_tick,
                    server_group=server.pid,
                )
            )
            observer.phase_finished(result)
            time.sleep(PAUSE_BETWEEN_PHASES_S)
            observer.note(f"wrk on the empty handler @ {level:,}")
            wrk = wrk_rps(f"{target.url}/", level, config.ceiling_duration)
            out.append(
                {
                    "connections": level,
                    "rps": result.rps,
                    "success_pct": result.success_pct,
                    "latency": asdict(result.latency),
                    "generator_cpu_share": result.generator_cpu_share,
                    "generator_vs_server": result.generator_vs_server,
                    "wrk_rps": wrk,
                }
            )
            time.sleep(PAUSE_BETWEEN_PHASES_S)
    return out


CLOSED_LOOP_MAX_CONNECTIONS = 256
"""Connections of the closed-loop run that finds the maximum rate the open-loop steps scale."""


def _open_loop(
    config: BenchConfig,
    target: Target,
    ids: list[str],
    observer: RunObserver,
    server_group: int | None,
) -> dict[str, Any]:
    """Closed-loop maximum of the 80/20 mix first, then the open-loop steps at fractions of it."""
    closed = _users_phase(
        config, target, SCENARIOS["mixed"], CLOSED_LOOP_MAX_CONNECTIONS, ids, observer,
        server_group, None, "closed-loop maximum, mixed",
    )
    observer.phase_finished(closed)
    time.sleep(PAUSE_BETWEEN_PHASES_S)
    steps = []
    for fraction in config.open_loop_fractions:
        rate = max(1.0, closed.rps * fraction)
        observer.note(
            f"open loop: {rate:,.0f} req/s ({fraction:.0%} of {closed.rps:,.0f}) on "
            f"{config.open_loop_connections:,} connections for {config.duration:.0f} s"
        )
        step = _run_async(
            run_open_loop_step(
                target.host, target.port, ids,
                connections=config.open_loop_connections, rate=rate, duration=config.duration,
                timeout=config.timeout, fraction=fraction,
            )
        )
        observer.note(
            f"  p50 {step.p50_ms:.1f} ms, p99 {step.p99_ms:.1f} ms, p99.9 {step.p999_ms:.1f} ms, "
            f"success {step.success_pct:.2f} %"
        )
        steps.append(step.to_dict())
        time.sleep(PAUSE_BETWEEN_PHASES_S)
    return {
        "closed_loop_max_rps": closed.rps,
        "closed_loop_connections": CLOSED_LOOP_MAX_CONNECTIONS,
        "connections": config.open_loop_connections,
        "steps": steps,
        "best_rate": best_rate(steps),
    }


def _messaging_open_loop(
    config: BenchConfig, target: Target, phases: list[PhaseResult], observer: RunObserver
) -> dict[str, Any] | None:
    """Sends at `SEND_FRACTION` of the most sends per second a closed-loop messaging phase
    completed, with history pages beside them, in open loop with `config.sockets` sockets."""
    sends = [p.ops_rps.get("send", 0.0) for p in phases if p.scenario == "messaging"]
    if not sends or max(sends) <= 0:
        return None
    rate = max(1.0, max(sends) * SEND_FRACTION)
    time.sleep(PAUSE_BETWEEN_PHASES_S)
    try:
        step: dict[str, Any] = _run_async(run_messaging_open_loop(
            target, send_rate=rate, duration=config.duration, sockets=config.sockets,
            users=config.messaging_users, group_size=config.group_size, timeout=config.timeout,
            note=observer.note,
        ))
    except SetupFailed as exc:
        raise BenchError(f"messaging setup failed: {exc}") from None
    observer.note(summary_line(step))
    return step | {"closed_loop_send_max": max(sends), "fraction": SEND_FRACTION}


def _start_yardstick(
    config: BenchConfig, topology: Topology, stack: ExitStack, run_dir: Path, observer: RunObserver
) -> Yardstick:
    """The bare stack on its own port, with the API's granian setup and worker count."""
    if topology.path is None:
        raise BenchError("serving the bare stack needs a topology file")
    port = free_port()
    command = granian_command("messenger.bench.bare_app:create_app", port, config.workers, factory=True)
    env = {"MESSENGER_TOPOLOGY": str(topology.path), "MESSENGER_WORKERS": str(config.workers)}
    observer.note(f"starting the bare-stack yardstick on :{port}")
    process = stack.enter_context(ServerProcess(command, port, run_dir / "bare-server.log", env=env))
    return Yardstick(Target("127.0.0.1", port), process.pid)


def _new_run_dir(root: Path, started: datetime) -> Path:
    """var/bench/<UTC timestamp>/, suffixed when two runs start in the same second."""
    root.mkdir(parents=True, exist_ok=True)
    name = started.strftime("%Y%m%dT%H%M%SZ")
    candidate, n = root / name, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = root / f"{name}-{n}"


def run_benchmark(config: BenchConfig, observer: RunObserver | None = None) -> Path:
    """Run everything the config asks for and write the report; returns its directory."""
    observer = observer or RunObserver()
    started = datetime.now(UTC)
    run_dir = _new_run_dir(config.out_root, started)
    with ExitStack() as stack:
        topology: Topology | None = None
        if config.topology_path is not None:
            topology = load_topology(config.topology_path)
        elif config.url is None and config.server == "api":
            topology = _start_cluster(config, stack, observer)
        server: ExitStack | None = None
        server_group: int | None = None
        if config.url is not None:
            target = Target.parse(config.url)
        else:
            port = free_port()
            if config.server == "fake":
                command = granian_command(
                    "messenger.bench.fake_api:create_app", port, 1, factory=True
                )
                env: dict[str, str] = {}
            else:
                if topology is None or topology.path is None:
                    raise BenchError("serving the API needs a topology file")
                command, env = api_command(port, config.workers, topology.path)
            observer.note(f"starting the {config.server} server on :{port}")
            server = stack.enter_context(ExitStack())
            server_group = server.enter_context(
                ServerProcess(command, port, run_dir / "server.log", env=env)
            ).pid
            target = Target("127.0.0.1", port)
        observer.note("collecting user ids to read")
        ids: list[str] = []
        if topology is not None and config.server == "api":
            ids = _sample_ids_from_shards(topology, config.sample_ids)
        if not ids:  # a fake server, or an empty cluster: read (or create) through the API
            ids = _run_async(_ids_from_api(target, config.sample_ids, config.timeout))
        yardstick = None
        if config.bare and server is not None and config.server == "api" and topology is not None:
            yardstick = _start_yardstick(config, topology, server, run_dir, observer)
        phases = _run_phases(
            config, target, ids, observer, server_group, run_dir, topology, yardstick
        )
        open_loop: dict[str, Any] | None = None
        messaging_open_loop: dict[str, Any] | None = None
        if config.open_loop and ids:
            open_loop = _open_loop(config, target, ids, observer, server_group)
        if config.open_loop:
            messaging_open_loop = _messaging_open_loop(config, target, phases, observer)
        if server is not None:
            server.close()  # stop our server before measuring the ceilings on the same cores
        measured: dict[str, Any] = {}
        if config.ceilings:
            measured["empty_handler"] = _empty_handler_ceiling(config, run_dir, observer)
            if topology is not None:
                observer.note("pgbench: select-only and single-row insert, direct and PgBouncer")
                measured["pgbench"] = [
                    r.to_dict()
                    for r in ceilings.measure_database_ceilings(
                        topology,
                        duration=config.ceiling_duration,
                        clients_per_shard=config.pgbench_clients,
                    )
                ]
        distribution = [s.to_dict() for s in measure_distribution(topology)] if topology else []
    data: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "target": target.url,
        "server": "external" if config.url else config.server,
        "shards": len(topology.shards) if topology else None,
        "known_ids": len(ids),
        "phases": [p.to_dict() for p in phases],
        "ceilings": measured,
        "cache": os.environ.get("MESSENGER_CACHE", "on"),
        "open_loop": open_loop,
        "messaging_open_loop": messaging_open_loop,
        "distribution": distribution,
    }
    observer.note(f"writing the report to {run_dir}")
    report.finish_report(data, run_dir)
    return run_dir
