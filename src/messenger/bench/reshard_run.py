"""`messenger bench --reshard`: add a shard (5 → 6) under a mixed load, and measure it.

The run owns its cluster (`cluster_dir`, destroyed and created again each time, so the shape is
always the same), seeds it (users in bulk; accounts, follows, groups and messages through the
API), serves the real API, and then, with the load running the whole time:
a stretch idle, `shards add` through the workflow (in a thread of this process, so its phase
boundaries are on the load's clock), a stretch after. Afterwards it reads every acknowledged
write and message back through the API, counts the rows per shard and those on a shard the
final ring does not give them, runs the reference audit, and writes
var/bench/reshard-<UTC time>/report.md, report.json, reshard.png and samples.csv.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from messenger.bench import charts
from messenger.bench.loadgen import process_group_cpu_seconds
from messenger.bench.phase import Target
from messenger.bench.reshard_analysis import (
    MOVING,
    REMOVAL,
    WRITE_OPS,
    MovingKeys,
    Window,
    errors_by_outcome,
    goal_row,
    hold_window,
    latency_by_window,
    misplaced_total,
    render_markdown,
    switch_targets,
    throughput_by_window,
    unexpected_errors,
    windows,
)
from messenger.bench.reshard_chat import (
    ChatSetup,
    MessageCheck,
    MessageLedger,
    set_up_chat,
    verify_messages,
)
from messenger.bench.reshard_load import Mix, ReshardLoad, verify
from messenger.bench.runner import BenchError, _free_base_port, _sample_ids_from_shards
from messenger.bench.server import ServerProcess, api_command, free_port
from messenger.cluster.local import LocalCluster
from messenger.storage.audit.checks import reference_checks
from messenger.storage.audit.runner import audit
from messenger.storage.bulk.seed import seed_users
from messenger.storage.migrator import migrate
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.resharding.counts import misplaced_rows, shard_rows
from messenger.storage.resharding.plan import (
    ReshardPlan,
    next_shard_indexes,
    plan_add,
    plan_remove,
    planned_shard,
)
from messenger.storage.resharding.redis_calls import adoption, publish_ring
from messenger.storage.resharding.workflow import (
    Reshard,
    StateStore,
    WorkflowState,
    new_workflow_id,
)
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import Topology

SHARDS = 5
PHASE_NAMES = ("copy", "verify", "switch", "cleanup")


@dataclass
class ReshardBenchConfig:
    users: int = 1_000_000
    accounts: int = 300
    """Registered through the API: they follow each other, chat in groups, and send in the load."""
    group_size: int = 5
    follows_each: int = 5
    messages: int = 15_000
    """Sent into the groups before the load (the load sends more)."""
    connections: int = 32
    rate: float = 300.0
    """Requests per second offered by all connections together (each paces itself)."""
    mix: Mix = field(default_factory=Mix)
    idle_s: float = 20.0
    """Load before the workflow starts (the idle baseline)."""
    after_s: float = 15.0
    """Load after the workflow ends."""
    remove: bool = True
    """Then `shards remove` of the new shard, under the same load, after `between_s`."""
    between_s: float = 10.0
    max_s: float = 1_800.0
    """The whole load, at most: a workflow still running then fails the run."""
    workers: int = 2
    timeout: float = 10.0
    sample_ids: int = 40_000
    """Ids sampled from the shards; half of those the load uses are on moving keys."""
    cluster_dir: Path = Path("var/bench/reshard-cluster")
    out_root: Path = Path("var/bench")
    command: str = "messenger bench --reshard"


def smoke_reshard_config(**overrides: Any) -> ReshardBenchConfig:
    values: dict[str, Any] = {"users": 20_000, "accounts": 40, "messages": 1_000, "idle_s": 8.0, "after_s": 6.0, "between_s": 4.0, "rate": 200.0,
                              "sample_ids": 20_000, "max_s": 600.0}
    return ReshardBenchConfig(**(values | overrides))


class ReshardObserver:
    """Hears about the run; the CLI draws it."""

    def note(self, message: str) -> None:
        """A step started or finished (also called from the workflow's thread)."""

    def tick(self, line: str) -> None:
        """About once a second while the load runs: phase, req/s, errors."""


@dataclass
class PhaseClock:
    """The workflow's phase boundaries, in seconds since the load started (thread-safe enough:
    appends only, read after the thread ends or for display)."""

    origin: float
    starts: list[tuple[str, float]] = field(default_factory=list)
    finished: float | None = None
    published: float | None = None
    error: str | None = None

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def start(self, name: str) -> None:
        self.starts.append((name, self.now()))

    @property
    def current(self) -> str:
        if self.error:
            return "failed"
        if self.finished is not None:
            return "done"
        return self.starts[-1][0] if self.starts else "idle"

    def phases(self, end: float) -> list[tuple[str, float, float]]:
        last = self.finished if self.finished is not None else end
        bounds = [t for _, t in self.starts[1:]] + [last]
        return [(name, start, stop) for (name, start), stop in zip(self.starts, bounds, strict=True)]


def _run_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path, n = root / f"reshard-{stamp}", 1
    while path.exists():
        n += 1
        path = root / f"reshard-{stamp}-{n}"
    path.mkdir()
    return path


def _fresh_cluster(config: ReshardBenchConfig, observer: ReshardObserver) -> tuple[LocalCluster, Topology]:
    old = LocalCluster(config.cluster_dir, progress=observer.note)
    if old.exists:
        observer.note(f"destroying the previous run's cluster in {config.cluster_dir}")
        old.destroy()
    # Ports for the shard the run adds too, so add_shards finds them free.
    cluster = LocalCluster(config.cluster_dir, shards=SHARDS, base_port=_free_base_port(SHARDS + 1),
                           progress=observer.note)
    observer.note(f"creating the {SHARDS}-shard cluster in {config.cluster_dir}")
    topology = cluster.up()
    failed = [o for o in migrate(topology) if not o.ok]
    if failed:
        raise BenchError(f"migrations failed: {failed}")
    return cluster, topology


def _ids_for_load(topology: Topology, keys: MovingKeys, wanted: int) -> tuple[list[str], int]:
    """Sampled ids, as many on moving keys as on the others (so the short switch window gets
    enough moving-key samples); returns them and how many move."""
    sampled = _sample_ids_from_shards(topology, wanted)
    moving = [i for i in sampled if keys.key_class(i) == MOVING]
    other = [i for i in sampled if keys.key_class(i) != MOVING][: len(moving)]
    ids = [x for pair in zip(moving, other, strict=False) for x in pair]
    return ids, len(moving)


def _run_workflow(
    config: ReshardBenchConfig,
    cluster: LocalCluster,
    current: Topology,
    state_dir: Path,
    clock: PhaseClock,
    observer: ReshardObserver,
) -> list[WorkflowState]:
    """`shards add` on the local cluster: servers for one more shard, migrated, then the
    workflow; with `config.remove`, after a pause, `shards remove` of that shard."""
    clock.start("servers")
    created = cluster.add_shards(1)
    failed = [o for o in migrate(replace(current, shards=created)) if not o.ok]
    if failed:
        raise BenchError(f"migrating the new shard failed: {failed}")
    path = cluster.topology_path
    store = StateStore(state_dir)

    def reshard(plan: ReshardPlan, prefix: str) -> WorkflowState:
        def publish(new: Topology) -> None:
            publish_ring(new, path)
            clock.published = clock.now()
            observer.note(f"epoch {new.epoch} published at {clock.published:.2f} s")

        def adopted(epoch: int) -> bool:
            return adoption(current.redis_url, epoch)[0]

        def progress(line: str) -> None:
            name = line.rstrip("…")
            if line.endswith("…") and name in PHASE_NAMES:
                clock.start(prefix + name)
                observer.note(f"{prefix}{name} started at {clock.now():.2f} s")

        state = WorkflowState(new_workflow_id(), plan)
        with store.locked():
            store.save(state)
            return Reshard(store, state, publish, adopted, progress=progress).run()

    added = reshard(plan_add(current, created), "")
    if not config.remove:
        return [added]
    clock.start("between")
    time.sleep(config.between_s)
    return [added, reshard(plan_remove(added.plan.new, created[0].index), REMOVAL)]


@dataclass
class LoadOutcome:
    load: ReshardLoad
    clock: PhaseClock
    cpu: list[tuple[float, float]]
    load_end: float
    workflow: WorkflowState | None
    """The add's workflow."""
    removal: WorkflowState | None = None
    """The remove's workflow, when the run removes the new shard again."""


async def _drive(
    config: ReshardBenchConfig,
    load: ReshardLoad,
    workflow: Callable[[PhaseClock], list[WorkflowState]],
    server_group: int,
    observer: ReshardObserver,
) -> LoadOutcome:
    stop = asyncio.Event()
    running = asyncio.ensure_future(load.run(stop))
    await asyncio.sleep(0)
    clock = PhaseClock(load.started)
    cpu: list[tuple[float, float]] = []
    result: dict[str, list[WorkflowState]] = {}
    thread: threading.Thread | None = None

    def in_thread() -> None:
        try:
            result["states"] = workflow(clock)
        except Exception as exc:  # the run reports it; the load stops
            clock.error = f"{type(exc).__name__}: {exc}"
            observer.note(f"[red]the workflow failed: {clock.error}[/red]")
        finally:
            clock.finished = clock.now()

    after_until: float | None = None
    last_count, last_t = 0, 0.0
    while True:
        await asyncio.sleep(1.0)
        now = clock.now()
        cpu.append((now, process_group_cpu_seconds(server_group)))
        if thread is None and now >= config.idle_s:
            thread = threading.Thread(target=in_thread, name="reshard-workflow", daemon=True)
            thread.start()
        if thread is not None and clock.finished is not None and after_until is None:
            after_until = clock.finished + (config.after_s if clock.error is None else 2.0)
        samples = load.samples
        count = len(samples)
        failed = sum(1 for s in samples[last_count:] if not s.ok)
        rate = (count - last_count) / max(now - last_t, 1e-6)
        observer.tick(
            f"{now:6.1f} s  phase [bold]{clock.current}[/bold]  {rate:,.0f} req/s  "
            f"{len(samples):,} requests, {load.ledger.acknowledged:,} writes acknowledged, "
            f"{failed} failed this second"
        )
        last_count, last_t = count, now
        if after_until is not None and now >= after_until:
            break
        if now >= config.max_s:
            clock.error = clock.error or f"the workflow was still at {clock.current} after {config.max_s:.0f} s"
            break
    stop.set()
    await running
    load_end = clock.now()
    cpu.append((load_end, process_group_cpu_seconds(server_group)))
    states = result.get("states", [])
    return LoadOutcome(load, clock, cpu, load_end, states[0] if states else None,
                       states[1] if len(states) > 1 else None)


async def _references(topology: Topology) -> dict[str, Any]:
    async with PrimaryPools(topology) as pools:
        report = await audit(pools, reference_checks(), OutboxRelay(pools, HANDLERS))
    return report.to_json()


def run_reshard_benchmark(config: ReshardBenchConfig, observer: ReshardObserver | None = None) -> Path:
    """The whole run; returns the report's directory."""
    observer = observer or ReshardObserver()
    started = datetime.now(UTC)
    run_dir = _run_dir(config.out_root)
    cluster, topology = _fresh_cluster(config, observer)
    try:
        return _measure(config, observer, started, run_dir, cluster, topology)
    finally:
        observer.note(f"stopping the cluster (data kept in {config.cluster_dir} until the next run)")
        cluster.down()


def _measure(
    config: ReshardBenchConfig,
    observer: ReshardObserver,
    started: datetime,
    run_dir: Path,
    cluster: LocalCluster,
    topology: Topology,
) -> Path:
    observer.note(f"seeding {config.users:,} users")
    seeded = seed_users(topology, config.users)
    observer.note(f"seeded in {seeded.elapsed_s:.1f} s ({seeded.rows_per_second:,.0f} rows/s)")
    preview: ReshardPlan = plan_add(topology, tuple(planned_shard(i) for i in next_shard_indexes(topology, 1)))
    keys = MovingKeys.of_plan(preview)
    ids, moving_ids = _ids_for_load(topology, keys, config.sample_ids)
    observer.note(f"the load uses {len(ids):,} seeded ids ({moving_ids:,} on moving keys) and creates more")
    if topology.path is None:
        raise BenchError("the cluster has no topology file")
    port = free_port()
    command, env = api_command(port, config.workers, topology.path)
    env["MESSENGER_ACCESS_TTL"] = str(int(config.max_s) + 3_600)  # the accounts' tokens outlive the run
    observer.note(f"starting the API ({config.workers} workers) on :{port}")
    with ServerProcess(command, port, run_dir / "server.log", env=env) as server:
        assert server.pid is not None
        target = Target("127.0.0.1", port)
        messages = MessageLedger()
        observer.note(f"{config.accounts:,} accounts, follows, groups and {config.messages:,} messages "
                      "through the API")
        chat: ChatSetup = uvloop.run(set_up_chat(
            target, messages, accounts=config.accounts, group_size=config.group_size,
            follows_each=config.follows_each, messages=config.messages, timeout=config.timeout,
            note=observer.note,
        ))
        observer.note(f"chat set up in {chat.seconds:.1f} s")
        rows_before = shard_rows(topology.shards)
        load = ReshardLoad(target, ids, keys, connections=config.connections, rate=config.rate,
                           mix=config.mix, timeout=config.timeout, chatters=chat.chatters, messages=messages)
        state_dir = config.cluster_dir / "reshard-state"  # holds DSNs: kept out of the report

        def workflow(clock: PhaseClock) -> list[WorkflowState]:
            return _run_workflow(config, cluster, topology, state_dir, clock, observer)

        removal = f", {config.between_s:.0f} s, `shards remove` (6 → 5)" if config.remove else ""
        observer.note(f"load: {config.idle_s:.0f} s idle, then `shards add` (5 → 6){removal}, "
                      f"then {config.after_s:.0f} s")
        outcome: LoadOutcome = uvloop.run(_drive(config, load, workflow, server.pid, observer))
        observer.note("reading every acknowledged write back through the API")
        last = outcome.removal or outcome.workflow
        new_topology = last.plan.new if last is not None else topology
        checked = uvloop.run(verify(target, load.ledger, load.key_class, config.timeout))
        observer.note("reading every conversation's history back through the API")
        found = uvloop.run(verify_messages(target, messages, chat.readers, load.key_class, config.timeout))
    observer.note("counting rows per shard and rows on a shard the ring does not give them; auditing references")
    final = replace(new_topology, path=topology.path)
    rows_after = shard_rows(final.shards)
    misplaced = misplaced_rows(final)
    references = asyncio.run(_references(final))
    data = _report_data(config, started, seeded.elapsed_s, preview, outcome, checked, rows_before, rows_after,
                        references)
    data |= _chat_data(chat, messages, found, load, misplaced)
    data["targets"] += _chat_targets(data)
    _write(run_dir, data, outcome)
    return run_dir


def _report_data(
    config: ReshardBenchConfig,
    started: datetime,
    seed_seconds: float,
    preview: ReshardPlan,
    outcome: LoadOutcome,
    checked: Any,
    rows_before: dict[str, dict[str, int]],
    rows_after: dict[str, dict[str, int]],
    references: dict[str, Any],
) -> dict[str, Any]:
    load, clock = outcome.load, outcome.clock
    phases = clock.phases(outcome.load_end)
    spans: list[Window] = windows(phases, outcome.load_end)
    findings = outcome.workflow.findings if outcome.workflow is not None else {}
    removal = outcome.removal.findings if outcome.removal is not None else {}
    for prefix, found in (("", findings), (REMOVAL, removal)):
        if held := hold_window(phases, found.get("switch", {}).get("steps", {}), prefix=prefix):
            spans.append(held)
    samples = load.samples
    latency = latency_by_window(samples, spans)
    unexpected = unexpected_errors(samples)
    ledger = load.ledger
    data: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": config.command,
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
                   f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "shards_before": len(preview.old.shards),
        "shards_after": len(outcome.workflow.plan.new.shards) if outcome.workflow else None,
        "shards_after_removal": len(outcome.removal.plan.new.shards) if outcome.removal else None,
        "seed_seconds": seed_seconds,
        "moved_fraction": preview.moved_fraction,
        "failure": clock.error,
        "phases": [{"name": n, "start": round(a, 3), "end": round(b, 3)} for n, a, b in phases],
        "published_at": clock.published,
        "load_seconds": outcome.load_end,
        "latency": latency,
        "throughput": throughput_by_window(samples, spans, outcome.cpu),
        "errors": errors_by_outcome(samples),
        "unexpected_errors": unexpected,
        "ledger": {
            "ids": len(ledger.entries),
            "acknowledged": ledger.acknowledged,
            "uncertain": ledger.uncertain,
            "rejected": ledger.rejected,
            "unknown_creates": ledger.unknown_creates,
            "checked": checked.checked,
            "lost": len(checked.lost),
            "lost_moving": checked.lost_moving,
            "lost_samples": checked.lost[:10],
        },
        "rows": {"before": rows_before, "after": rows_after},
        "moved_rows": findings.get("cleanup", {}).get("deleted", {}),
        "workflow_findings": {k: v for k, v in findings.items() if k != "verify"}
        | {"verify_rows": findings.get("verify", {}).get("rows")},
        "removal_findings": ({k: v for k, v in removal.items() if k != "verify"}
                             | {"verify_rows": removal.get("verify", {}).get("rows")}) if removal else None,
        "references": {"ok": references["ok"], "unreachable_shards": references["unreachable_shards"],
                       "found": {k["kind"]: k["found"] for k in references["kinds"]},
                       "relay": references["relay"]},
    }
    data["targets"] = switch_targets(latency, len(checked.lost), bool(references["ok"]), unexpected,
                                     removal=outcome.removal is not None)
    if clock.error is not None:
        data["targets"].append({"target": "workflow finished", "value": False, "goal": True, "unit": "",
                                "met": False})
    return data


def _chat_data(
    chat: ChatSetup, messages: MessageLedger, found: MessageCheck, load: ReshardLoad,
    misplaced: dict[str, dict[str, int]],
) -> dict[str, Any]:
    return {
        "chat": {"accounts": chat.accounts, "follows": chat.follows, "conversations": chat.conversations,
                 "messages_seeded": chat.messages, "setup_seconds": round(chat.seconds, 1)},
        "messages": {
            "seeded": messages.seeded,
            "sent": messages.sent,
            "unanswered": messages.unanswered_sends,
            "rejected": messages.rejected,
            "conversations": found.conversations,
            "checked": found.checked,
            "lost": len(found.lost),
            "lost_moving": found.lost_moving,
            "duplicated": len(found.duplicated),
            "unreadable": found.unreadable[:10],
            "samples": (found.lost + found.duplicated)[:10],
        },
        "stale_reads": {"count": load.stale_reads, "samples": load.stale_samples},
        "misplaced": misplaced,
    }


def _chat_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    misplaced = misplaced_total(data["misplaced"])
    return [
        goal_row("lost acknowledged messages", data["messages"]["lost"], 0, "messages"),
        goal_row("messages twice in a history", data["messages"]["duplicated"], 0, "messages"),
        goal_row("stale reads", data["stale_reads"]["count"], 0, "reads"),
        goal_row("rows on a shard the final ring does not give them", misplaced, 0, "rows"),
    ]


def _write(run_dir: Path, data: dict[str, Any], outcome: LoadOutcome) -> None:
    (run_dir / "report.json").write_text(json.dumps(data, indent=2, default=str))
    (run_dir / "report.md").write_text(render_markdown(data))
    with (run_dir / "samples.csv").open("w") as out:  # every request, to look into an outlier later
        out.write("start_s,latency_s,op,keys,outcome\n")
        out.writelines(f"{s.start:.4f},{s.latency:.4f},{s.op},{s.key_class},{s.outcome}\n"
                       for s in outcome.load.samples)
    writes: dict[str, tuple[list[float], list[float]]] = {}
    failures: tuple[list[float], list[float]] = ([], [])
    per_second = [0] * (int(outcome.load_end) + 1)
    for s in outcome.load.samples:
        if s.ok:
            per_second[min(int(s.end), len(per_second) - 1)] += 1
        else:
            failures[0].append(s.start)
            failures[1].append(s.latency * 1000)
        if s.op in WRITE_OPS and s.ok:
            xs, ys = writes.setdefault(s.key_class, ([], []))
            xs.append(s.start)
            ys.append(s.latency * 1000)
    charts.reshard_chart(writes, failures, per_second, data["phases"], run_dir / "reshard.png")
