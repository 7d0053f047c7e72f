"""`messenger bench`: load scenarios, ceilings and a report under var/bench/<timestamp>/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from messenger.bench.loadgen import Recorder
from messenger.bench.phase import PhaseResult
from messenger.bench.report import REPORT_JSON, target_formatter
from messenger.bench.reshard_analysis import misplaced_total
from messenger.bench.reshard_run import (
    ReshardBenchConfig,
    ReshardObserver,
    run_reshard_benchmark,
    smoke_reshard_config,
)
from messenger.bench.runner import (
    DEFAULT_LEVELS,
    DEFAULT_SCENARIOS,
    BenchConfig,
    BenchError,
    RunObserver,
    run_benchmark,
    smoke_config,
)
from messenger.bench.scenarios import SCENARIOS


class RichObserver(RunObserver):
    """Progress bar per phase, a line per step, live req/s and errors."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[live]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.seconds = 1.0

    def note(self, message: str) -> None:
        self.console.print(f"[dim]- {message}[/dim]")

    def phase_started(self, label: str, seconds: float) -> None:
        self.seconds = seconds
        self.progress.start()
        self.task = self.progress.add_task(label, total=1.0, live="")

    def phase_tick(self, recorder: Recorder, fraction: float) -> None:
        if self.task is None:
            return
        elapsed = max(fraction * self.seconds, 0.5)
        live = f"{recorder.ok / elapsed:,.0f} req/s, {recorder.failed:,} errors"
        self.progress.update(self.task, completed=fraction, live=live)

    def phase_finished(self, result: PhaseResult) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.stop()
        lat = result.latency
        colour = "green" if result.success_pct == 100 else "red"
        self.console.print(
            f"  {result.scenario} @ {result.connections:,}: {result.rps:,.0f} req/s, "
            f"[{colour}]{result.success_pct:.2f} % ok[/{colour}], p50 {lat.p50_ms:.1f} ms, "
            f"p99 {lat.p99_ms:.1f} ms, generator CPU {result.generator_cpu_share:.0%} of machine"
            + (
                f", {result.generator_vs_server:.0%} of generator+server"
                if result.generator_vs_server is not None
                else ""
            )
        )


def results_table(report: dict[str, Any]) -> Table:
    table = Table(title="Benchmark results")
    for name in ("scenario", "conns", "req/s", "ok %", "p50", "p95", "p99", "p99.9", "max"):
        table.add_column(name, justify="left" if name == "scenario" else "right")
    table.add_column("errors")
    table.add_column("gen CPU", justify="right")
    for p in report["phases"]:
        lat = p["latency"]
        errors = ", ".join(f"{k} {v}" for k, v in p["errors"].items() if v) or "-"
        table.add_row(
            p["scenario"],
            f"{p['connections']:,}",
            f"{p['rps']:,.0f}",
            f"{p['success_pct']:.2f}",
            *(f"{lat[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")),
            errors,
            f"{p['generator_cpu_share']:.0%}",
        )
    return table


def targets_table(report: dict[str, Any]) -> Table:
    table = Table(title="Targets (goals, not assertions)")
    for name in ("target", "value", "goal", "met"):
        table.add_column(name)
    for t in report["targets"]:

        def fmt(v: float | None, unit: str = t["unit"]) -> str:
            return "-" if v is None else target_formatter(unit)(v)

        met = "-" if t["met"] is None else ("[green]yes[/green]" if t["met"] else "[red]no[/red]")
        table.add_row(t["target"], fmt(t["value"]), fmt(t["goal"]), met)
    return table


def _csv(value: str, cast: type) -> list[Any]:
    return [cast(v.strip().replace("_", "")) for v in value.split(",") if v.strip()]


_DEFAULT_LEVELS_TEXT = ",".join(map(str, DEFAULT_LEVELS))


def bench_command(
    scenarios: Annotated[
        str, typer.Option(help=f"Comma-separated, from: {', '.join(sorted(SCENARIOS))}.")
    ] = ",".join(DEFAULT_SCENARIOS),
    levels: Annotated[str, typer.Option(help="Concurrency levels (open connections).")] = _DEFAULT_LEVELS_TEXT,
    duration: Annotated[float, typer.Option(help="Seconds per scenario and level.")] = 30.0,
    topology: Annotated[
        Path | None, typer.Option("--topology", help="Use this running cluster.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Use this running server.")] = None,
    server: Annotated[
        str, typer.Option(help="Server to start: api (messenger serve) or fake (in-memory).")
    ] = "api",
    workers: Annotated[int | None, typer.Option(help="Server workers (default: cores).")] = None,
    shards: Annotated[int, typer.Option(help="Shards of the cluster started.")] = 5,
    users: Annotated[
        int | None,
        typer.Option(
            help="Users the started cluster is seeded with (default 100,000; smoke 10,000; "
            "--reshard 1,000,000, with --smoke 20,000)."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 10.0,
    think_time: Annotated[
        float, typer.Option(help="Mean pause between a user's iterations, seconds.")
    ] = 0.0,
    ceilings: Annotated[bool, typer.Option(help="Measure pgbench and empty handler.")] = True,
    open_loop: Annotated[
        bool, typer.Option(help="Open-loop steps of the 80/20 mix after the phases (10,000 conns).")
    ] = False,
    open_loop_connections: Annotated[
        int, typer.Option(help="Connections open during the open-loop steps.")
    ] = 10_000,
    bare: Annotated[
        bool, typer.Option(help="Run the read scenario on the bare-stack yardstick too.")
    ] = True,
    ceiling_duration: Annotated[float, typer.Option(help="Seconds per ceiling run.")] = 10.0,
    out: Annotated[Path, typer.Option(help="Reports go to OUT/<timestamp>/.")] = Path("var/bench"),
    smoke: Annotated[bool, typer.Option(help="Short run of every part (under 2 minutes).")] = False,
    profile: Annotated[
        bool, typer.Option(help="Sample the server with py-spy in each phase (top frames).")
    ] = False,
    sockets: Annotated[
        int | None,
        typer.Option(help="WebSockets open in the messaging scenario (default 1,000; smoke 50)."),
    ] = None,
    messaging_users: Annotated[
        int | None,
        typer.Option(help="Accounts the messaging scenario registers (default 250; smoke 20; "
                          "with --reshard 300; smoke 40)."),
    ] = None,
    group_size: Annotated[int, typer.Option(help="Members per messaging group.")] = 5,
    reshard: Annotated[
        bool,
        typer.Option(
            help="Instead: add a shard (5 → 6) under a mixed load on a cluster of its own "
            "(var/bench/reshard-cluster, made afresh) and measure it (docs/resharding.md)."
        ),
    ] = False,
    rate: Annotated[float | None, typer.Option(help="--reshard: req/s offered (default 300; smoke 200).")] = None,
    connections: Annotated[int, typer.Option(help="--reshard: connections of the load.")] = 32,
    idle_seconds: Annotated[
        float | None, typer.Option(help="--reshard: load before the workflow (default 20; smoke 8).")
    ] = None,
    after_seconds: Annotated[
        float | None, typer.Option(help="--reshard: load after the workflow (default 15; smoke 6).")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="--reshard: the whole load at most (default 1,800; smoke 600).")
    ] = None,
) -> None:
    """Run the load scenarios and the ceilings, then write report.md, report.json and charts."""
    console = Console()
    if reshard:
        options = {"users": users, "rate": rate, "idle_s": idle_seconds, "after_s": after_seconds,
                   "max_s": max_seconds, "workers": workers, "timeout": timeout, "accounts": messaging_users}
        _reshard_command(console, smoke=smoke, out=out, connections=connections, group_size=group_size,
                         **{k: v for k, v in options.items() if v is not None})
        return
    overrides: dict[str, Any] = {
        "topology_path": topology,
        "url": url,
        "server": server,
        "out_root": out,
        "timeout": timeout,
        "think_time": think_time,
        "ceilings": ceilings,
        "bare": bare,
        "open_loop": open_loop,
        "open_loop_connections": open_loop_connections,
        "profile": profile,
        "group_size": group_size,
    }
    if sockets is not None:
        overrides["sockets"] = sockets
    if messaging_users is not None:
        overrides["messaging_users"] = messaging_users
    if workers:
        overrides["workers"] = workers
    try:
        if smoke:
            config = smoke_config(**overrides, **({} if users is None else {"users": users}))
        else:
            config = BenchConfig(
                scenarios=_csv(scenarios, str),
                levels=_csv(levels, int),
                duration=duration,
                shards=shards,
                users=100_000 if users is None else users,
                ceiling_duration=ceiling_duration,
                **overrides,
            )
        run_dir = run_benchmark(config, RichObserver(console))
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    data = json.loads((run_dir / REPORT_JSON).read_text())
    console.print(results_table(data))
    console.print(targets_table(data))
    console.print(f"Report: {run_dir / 'report.md'}")


class RichReshardObserver(ReshardObserver):
    """A line per step, and a live status line (phase, req/s, errors) while the load runs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status = console.status("")

    def note(self, message: str) -> None:
        self.console.print(f"[dim]- {message}[/dim]")

    def tick(self, line: str) -> None:
        self.status.update(line)
        self.status.start()


def reshard_tables(report: dict[str, Any]) -> list[Table]:
    """The report's figures as terminal tables: targets, phases, latency, throughput, errors."""
    targets = Table(title="Resharding under load: targets")
    for name in ("target", "value", "goal", "met"):
        targets.add_column(name)
    for t in report["targets"]:
        met = "[green]yes[/green]" if t["met"] else "[red]no[/red]"
        targets.add_row(t["target"], str(t["value"]), str(t["goal"]), met)
    phases = Table(title="Phases (s since the load started)")
    for name in ("phase", "start", "end", "seconds"):
        phases.add_column(name, justify="left" if name == "phase" else "right")
    for p in report["phases"]:
        phases.add_row(p["name"], f"{p['start']:.2f}", f"{p['end']:.2f}", f"{p['end'] - p['start']:.2f}")
    for key, prefix in (("workflow_findings", ""), ("removal_findings", "remove ")):
        steps = (report.get(key) or {}).get("switch", {}).get("steps", {})
        for step, seconds in steps.items():
            phases.add_row(f"  {prefix}switch: {step}", "", "", f"{seconds:.2f}")
    latency = Table(title="Latency by window (ms)")
    for name in ("window", "kind", "keys", "requests", "p50", "p99", "max"):
        latency.add_column(name, justify="left" if name in ("window", "kind", "keys") else "right")
    for r in report["latency"]:
        if r["requests"]:
            latency.add_row(r["window"], r["kind"], r["keys"], f"{r['requests']:,}",
                            *(f"{r[k]:.1f}" for k in ("p50_ms", "p99_ms", "max_ms")))
    throughput = Table(title="Throughput and server CPU")
    for name in ("window", "seconds", "req/s", "CPU µs/req", "cores"):
        throughput.add_column(name, justify="left" if name == "window" else "right")
    for r in report["throughput"]:
        cpu, cores = r["server_cpu_us_per_request"], r["server_cpu_cores"]
        throughput.add_row(r["window"], f"{r['seconds']:.1f}", f"{r['rps']:,.0f}",
                           "–" if cpu is None else f"{cpu:,.0f}", "–" if cores is None else f"{cores:.2f}")
    errors = Table(title="Errors by outcome")
    for name in ("keys", "outcome", "count"):
        errors.add_column(name)
    for keys, by in report["errors"].items():
        for outcome, n in by.items():
            errors.add_row(keys, outcome, f"{n:,}")
    return [targets, phases, latency, throughput, errors]


def _reshard_command(console: Console, *, smoke: bool, out: Path, **options: Any) -> None:
    command = "make bench-reshard" + ("-smoke" if smoke else "")
    config = smoke_reshard_config(out_root=out, command=command, **options) if smoke else ReshardBenchConfig(
        out_root=out, command=command, **options)
    observer = RichReshardObserver(console)
    try:
        run_dir = run_reshard_benchmark(config, observer)
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        observer.status.stop()
    data = json.loads((run_dir / REPORT_JSON).read_text())
    for table in reshard_tables(data):
        console.print(table)
    ledger = data["ledger"]
    messages = data["messages"]
    misplaced = misplaced_total(data["misplaced"])
    console.print(f"acknowledged writes {ledger['acknowledged']:,} on {ledger['ids']:,} ids; lost {ledger['lost']}")
    console.print(f"acknowledged messages {messages['checked']:,} in {messages['conversations']:,} conversations; "
                  f"lost {messages['lost']}, twice {messages['duplicated']}; stale reads {data['stale_reads']['count']}; "
                  f"rows on a wrong shard {misplaced}")
    console.print(f"Report: {run_dir / 'report.md'}")
    # The latency goals are goals; losing a write or a message, a duplicate, a stale read, a row on
    # the wrong shard, an error past the bounded retry, a dirty audit or a workflow that did not
    # finish are failures.
    if (data["failure"] or ledger["lost"] or data["unexpected_errors"] or not data["references"]["ok"]
            or messages["lost"] or messages["duplicated"] or data["stale_reads"]["count"] or misplaced):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `bench` command to the CLI."""
    app.command("bench")(bench_command)
