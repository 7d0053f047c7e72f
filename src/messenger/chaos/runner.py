"""The whole run: cluster, API, accounts and sockets, then each fault under load, then the report.

A fault's phase: warm-up under load → inject → hold → recover (restart through the cluster's
code) → wait until /ready → settle → pause the load → verify (relay backlog drained, every
ledger entry re-read, every socket resumed and missing nothing, `check references`) → resume the
load for the next fault. The error window is taken over the phase, from warm-up to the pause.
Every wait has a deadline, and the run as a whole has one (`max_total_s`): a fault that does not
recover is reported as such and the run goes on or ends; it never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from messenger.bench.loadgen import Connection, RequestFailed, raise_fd_limit
from messenger.bench.messaging import (
    Account,
    SetupFailed,
    auth_header,
    register_accounts,
    request_json,
)
from messenger.bench.phase import Target
from messenger.bench.server import ServerProcess, api_command, free_port
from messenger.chaos.faults import FAULTS, FaultError, build_fault
from messenger.chaos.ledger import Ledger
from messenger.chaos.load import LoadPlan, MixedLoad
from messenger.chaos.report import FaultResult, RunReport, write_report
from messenger.chaos.sockets import SocketFleet, SocketSession
from messenger.chaos.verify import check_references, reread_ledger, wait_backlog
from messenger.chaos.window import error_window
from messenger.cluster.daemon import port_is_free
from messenger.cluster.layout import ClusterLayout
from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import migrate
from messenger.storage.shards.ring import HashRing
from messenger.topology import Topology

READY_TIMEOUT_S = 90.0
VERIFY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0
"""How long the relay gets to drain after a recovery; after the long outage, at least as long
as the outage itself (the backlog it built up is that many seconds of fan-out)."""
WS_CATCH_UP_S = 20.0


class ChaosError(Exception):
    """The run could not be set up (cluster, API, accounts); the message says what failed."""


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    faults: tuple[str, ...] = tuple(FAULTS)
    quick: bool = False
    outage_s: float = 360.0
    out_root: Path = Path("var/chaos")
    cluster_dir: Path | None = None
    """Default: `out_root/cluster`, kept (stopped) between runs."""
    shards: int = 3
    shard: int = 1
    """The shard the shard faults hit."""
    workers: int = 2
    accounts: int = 12
    group_size: int = 4
    connections: int = 12
    think_s: float = 0.05
    warmup_s: float = 5.0
    hold_s: float = 20.0
    settle_s: float = 5.0
    max_total_s: float = 45 * 60.0

    @classmethod
    def for_run(cls, *, quick: bool, faults: tuple[str, ...], outage_s: float | None,
                out_root: Path) -> ChaosConfig:
        if quick:
            outage = 20.0 if outage_s is None else outage_s
            return cls(faults=faults, quick=True, outage_s=outage, out_root=out_root,
                       accounts=8, connections=8, warmup_s=3.0, hold_s=8.0, settle_s=3.0,
                       max_total_s=15 * 60.0 + 2 * outage)
        outage = 360.0 if outage_s is None else outage_s
        return cls(faults=faults, outage_s=outage, out_root=out_root,
                   max_total_s=30 * 60.0 + 2 * outage)

    def __post_init__(self) -> None:
        if not self.faults:
            raise ValueError("no fault to run")
        if self.outage_s <= 0 or self.hold_s < 0:
            raise ValueError("--outage-seconds must be positive")
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"the faulted shard {self.shard} is not one of 0..{self.shards - 1}")


class ChaosObserver:
    """What the run tells its caller as it goes (the CLI shows it with rich)."""

    def note(self, message: str) -> None:
        """A line worth printing."""

    def fault_started(self, name: str, number: int, total: int) -> None:
        """Fault `number` (1-based) of `total` begins its warm-up."""

    def stage(self, name: str, stage: str) -> None:
        """The fault's phase moved on: inject, hold, recover, verify …"""

    def tick(self, ok: int, failed: int, writes: int, sockets_connected: int) -> None:
        """About once a second: requests so far, acknowledged writes, socket connects."""

    def fault_finished(self, result: FaultResult) -> None:
        """A fault's result is in."""


@dataclass
class _Run:
    config: ChaosConfig
    cluster: LocalCluster
    topology: Topology
    target: Target
    api_pid: int
    observer: ChaosObserver
    ledger: Ledger = field(default_factory=Ledger)


def run_chaos(
    config: ChaosConfig, observer: ChaosObserver | None = None,
    cluster: LocalCluster | None = None,
) -> tuple[RunReport, Path]:
    """Run every fault of `config`; returns the report and the directory it was written to.

    `cluster`: an existing, migrated cluster to use (the tests' session cluster); by default the
    suite starts its own under `cluster_dir` and stops it at the end.
    """
    observer = observer or ChaosObserver()
    started = datetime.now(UTC)
    run_dir = config.out_root / started.strftime("%Y%m%dT%H%M%SZ")
    config_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    config_json["faults"] = ",".join(config.faults)
    report = RunReport(started_utc=started.isoformat(timespec="seconds"), config=config_json)
    own_cluster = cluster is None
    if cluster is None:
        cluster = _start_cluster(config, observer)
    try:
        topology = cluster.topology
        assert cluster.topology_path.exists(), "the cluster has no topology file"
        port = free_port()
        command, env = api_command(port, config.workers, cluster.topology_path)
        env["MESSENGER_ACCESS_TTL"] = str(int(config.max_total_s) + 3600)  # no expiry mid-run
        observer.note(f"starting `messenger serve` with {config.workers} workers on :{port}")
        log = run_dir / "server.log"
        with ServerProcess(command, port, log, env=env) as server:
            assert server.pid is not None
            run = _Run(config, cluster, topology, Target("127.0.0.1", port), server.pid, observer)
            asyncio.run(_run_faults(run, report))
    finally:
        report.finished_utc = datetime.now(UTC).isoformat(timespec="seconds")
        write_report(report, run_dir)
        if own_cluster:
            observer.note("stopping the chaos cluster (its data is kept)")
            cluster.down()
    return report, run_dir


def _start_cluster(config: ChaosConfig, observer: ChaosObserver) -> LocalCluster:
    cluster_dir = config.cluster_dir or config.out_root / "cluster"
    cluster = LocalCluster(cluster_dir, progress=observer.note)
    if not cluster.exists:
        cluster = LocalCluster(cluster_dir, shards=config.shards,
                               base_port=_free_base_port(config.shards), progress=observer.note)
    if cluster.state.shards <= config.shard:
        raise ChaosError(f"the cluster in {cluster_dir} has {cluster.state.shards} shards: "
                         f"shard {config.shard} cannot be faulted")
    observer.note(f"starting the {cluster.state.shards}-shard cluster in {cluster_dir}")
    cluster.up()
    failed = [o for o in migrate(cluster.topology) if not o.ok]
    if failed:
        raise ChaosError(f"migrations failed: {failed}")
    return cluster


def _free_base_port(shards: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 50_000)
        if all(port_is_free(p) for p in ClusterLayout(Path("."), shards, base).all_ports()):
            return base
    raise ChaosError("no free block of ports for the chaos cluster")


async def _run_faults(run: _Run, report: RunReport) -> None:
    config = run.config
    raise_fd_limit(4096)
    run.observer.note(f"registering {config.accounts} accounts, groups of {config.group_size}")
    try:
        accounts = await register_accounts(run.target, config.accounts, 30.0)
        groups = await _groups_on_every_shard(run, accounts)
    except SetupFailed as exc:
        raise ChaosError(f"setting up the accounts failed: {exc}") from None
    ring = HashRing.for_topology(run.topology)
    names = {s.index: s.name for s in run.topology.shards}
    on = sorted(names[ring.shard_for(cid)] for cid in groups)
    run.observer.note(f"{len(groups)} group conversations, on {', '.join(on)}")
    members = {cid: [a.user_id for a in group] for cid, group in groups.items()}
    conversations_of: dict[str, list[str]] = {a.user_id: [] for a in accounts}
    for cid, group in groups.items():
        for account in group:
            conversations_of[account.user_id].append(cid)
    reader_of = {cid: group[0] for cid, group in groups.items()}

    url = f"ws://{run.target.host}:{run.target.port}/api/v1/ws"
    fleet = SocketFleet([SocketSession(a, conversations_of[a.user_id], url, run.ledger)
                         for a in accounts])
    fleet.start()
    resumed = await fleet.wait_resumed(30.0)
    run.observer.note(f"{resumed}/{len(accounts)} WebSocket sessions open and resumed")

    plan = LoadPlan(config.connections, config.think_s, 10.0, conversations_of)
    load = MixedLoad(run.target.host, run.target.port, accounts, plan, run.ledger, ring, names)
    load.start()
    ticker = asyncio.ensure_future(_tick(run, fleet))
    deadline = time.monotonic() + config.max_total_s
    try:
        for number, name in enumerate(config.faults, 1):
            if time.monotonic() > deadline:
                report.notes.append(f"time bound of {config.max_total_s:.0f} s reached: "
                                    f"{name} and later faults not run")
                break
            run.observer.fault_started(name, number, len(config.faults))
            result = await _one_fault(run, name, load, fleet, members, reader_of, accounts)
            report.results.append(result)
            run.observer.fault_finished(result)
    finally:
        ticker.cancel()
        await load.stop()
        await fleet.stop()


async def _groups_on_every_shard(run: _Run, accounts: list[Account]) -> dict[str, list[Account]]:
    """Groups of random accounts (one may be in several) until every shard holds at least one
    conversation, so sends and history reads reach the faulted shard whichever it is; the
    conversation's id, hence its shard, is the server's choice."""
    ring = HashRing.for_topology(run.topology)
    rng = random.Random(0)
    size = max(2, min(run.config.group_size, len(accounts)))
    groups: dict[str, list[Account]] = {}
    covered: set[int] = set()
    conn = Connection(run.target.host, run.target.port, 30.0)
    try:
        for n in range(12 * len(run.topology.shards)):
            if len(covered) == len(run.topology.shards) and len(groups) * size >= len(accounts):
                break
            chunks = len(accounts) // size
            members = rng.sample(accounts, size)
            if n < chunks:  # the first groups hold every account once (the last takes the rest)
                members = accounts[n * size : (n + 1) * size if n < chunks - 1 else None]
            out = await request_json(
                conn, "POST", "/api/v1/conversations",
                {"type": "group", "title": f"chaos group {n}",
                 "member_ids": [m.user_id for m in members[1:]]},
                auth_header(members[0]),
            )
            cid = str(out["conversation"]["id"])
            groups[cid] = members
            covered.add(ring.shard_for(cid))
    finally:
        conn.close()
    if len(covered) < len(run.topology.shards):
        raise SetupFailed(f"no group conversation landed on some shard after {len(groups)} tries")
    return groups


async def _tick(run: _Run, fleet: SocketFleet) -> None:
    while True:
        await asyncio.sleep(1.0)
        outcomes = run.ledger.outcomes
        failed = sum(1 for o in outcomes[-5000:] if not o.ok)
        run.observer.tick(len(outcomes) - failed, failed, run.ledger.writes, fleet.connects)


async def _one_fault(
    run: _Run, name: str, load: MixedLoad, fleet: SocketFleet,
    members: dict[str, list[str]], reader_of: dict[str, Account], accounts: list[Account],
) -> FaultResult:
    config = run.config
    hold = config.outage_s if name == "primary-outage" else config.hold_s
    fault = build_fault(name, run.cluster, shard=config.shard, hold_s=hold,
                        outage_s=config.outage_s, api_pid=run.api_pid)
    run.ledger.phase = name
    phase_start = time.monotonic()
    drops_before = fleet.drops
    harness_error = ""
    run.observer.stage(name, "warm-up")
    await asyncio.sleep(config.warmup_s)
    run.observer.stage(name, f"inject: {fault.target}")
    injected = time.monotonic()
    recovery_s = 0.0
    evidence = ""
    try:
        await asyncio.to_thread(fault.inject)
        run.observer.stage(name, f"hold {fault.hold_s:.0f} s")
        await asyncio.sleep(fault.hold_s)
        if fault.evidence is not None:
            evidence = await asyncio.to_thread(fault.evidence)
    except (FaultError, psycopg.Error) as exc:
        harness_error = str(exc)
    finally:
        run.observer.stage(name, "recover")
        began = time.monotonic()
        try:
            await asyncio.to_thread(fault.recover)
        except FaultError as exc:
            harness_error = harness_error or str(exc)
        recovery_s = time.monotonic() - began
    run.observer.stage(name, "wait for /ready")
    if not await _wait_ready(run.target, READY_TIMEOUT_S):
        harness_error = harness_error or f"/ready not 200 within {READY_TIMEOUT_S:.0f} s"
    run.observer.stage(name, "settle")
    await asyncio.sleep(config.settle_s)
    await load.pause()
    phase_end = time.monotonic()
    window = error_window(run.ledger.outcomes_between(phase_start, phase_end), injected)
    ws_reconnects = fleet.drops - drops_before
    result = FaultResult(
        name=name, description=fault.description, target=fault.target,
        confined_to=None if fault.confined_to is None else list(fault.confined_to),
        hold_s=fault.hold_s, window=window, recovery_s=recovery_s,
        phase_s=phase_end - phase_start, ws_reconnects=ws_reconnects,
        harness_error=harness_error, evidence=evidence,
    )
    try:
        run.observer.stage(name, "verify: outbox backlog")
        drain_s = max(DRAIN_TIMEOUT_S, fault.hold_s if name == "primary-outage" else 0.0)
        backlog = await wait_backlog(run.topology, drain_s)
        result.backlog_pending, result.backlog_dead = backlog.pending, backlog.dead
        result.backlog_drained_s = backlog.drained_s
        run.observer.stage(name, "verify: re-read the ledger")
        reread = await reread_ledger(run.target.host, run.target.port, run.ledger, reader_of,
                                     VERIFY_TIMEOUT_S)
        result.writes_checked, result.lost_writes = reread.checked, reread.lost
        result.lost_samples = reread.samples
        run.observer.stage(name, "verify: WebSocket deliveries")
        socket_users = [a.user_id for a in accounts]
        result.ws_missing_live, result.ws_missing = await _ws_missing(
            run, fleet, members, socket_users
        )
        result.ws_expected = sum(
            len(members[m.conversation_id]) for m in run.ledger.messages.values()
        )
        run.observer.stage(name, "verify: check references")
        refs = await check_references(run.topology)
        result.references_ok, result.references_detail = refs.ok, refs.detail
    finally:
        load.resume()
    return result


async def _ws_missing(
    run: _Run, fleet: SocketFleet, members: dict[str, list[str]], socket_users: list[str],
) -> tuple[int, int]:
    """Missing deliveries once the sessions caught up; if some are still missing, every
    session reconnects and resumes once more (as a client would after a gap) before counting.
    Returns (missing on the live sockets after the catch-up wait, missing after that resume)."""
    def count() -> int:
        return sum(len(v) for v in run.ledger.missing_deliveries(members, socket_users).values())

    deadline = time.monotonic() + WS_CATCH_UP_S
    while count() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    live = count()
    if live:
        run.observer.note(f"{count()} deliveries missing: reconnecting every session to resume")
        await fleet.reconnect_all()
        await fleet.wait_resumed(WS_CATCH_UP_S)
        deadline = time.monotonic() + 5.0
        while count() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    return live, count()


async def _wait_ready(target: Target, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    conn = Connection(target.host, target.port, 5.0)
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(RequestFailed):
                if (await conn.request("GET", "/ready")).status == 200:
                    return True
            await asyncio.sleep(0.5)
        return False
    finally:
        conn.close()

