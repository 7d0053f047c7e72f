"""`messenger chaos`: faults injected into a local cluster under load, with a ledger and a report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from messenger.chaos.faults import FAULTS, FaultError, parse_faults
from messenger.chaos.report import FaultResult, results_table
from messenger.chaos.runner import ChaosConfig, ChaosError, ChaosObserver, run_chaos
from messenger.cli.console import console, fail
from messenger.cluster.binaries import MissingBinary
from messenger.cluster.local import ClusterError


class RichChaosObserver(ChaosObserver):
    """A bar over the faults, the current stage and live counters; a line per result."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[stage]}"),
            TextColumn("[dim]{task.fields[live]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: TaskID | None = None
        self.name = ""

    def note(self, message: str) -> None:
        self.console.print(f"[dim]- {message}[/dim]", highlight=False)

    def fault_started(self, name: str, number: int, total: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("faults", total=total, stage="", live="")
        self.name = name
        self.progress.update(self.task, completed=number - 1, stage=f"{name}: warm-up")

    def stage(self, name: str, stage: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, stage=f"{name}: {stage}")

    def tick(self, ok: int, failed: int, writes: int, sockets_connected: int) -> None:
        if self.task is not None:
            live = f"{ok:,} ok, {failed:,} failed, {writes:,} writes, {sockets_connected} socket connects"
            self.progress.update(self.task, live=live)

    def fault_finished(self, result: FaultResult) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
        verdict = "[green]pass[/]" if result.passed else "[red]FAIL[/]: " + "; ".join(result.problems)
        self.console.print(f"  {result.name}: {verdict}", highlight=False)

    def close(self) -> None:
        self.progress.stop()


def register(app: typer.Typer) -> None:
    app.command()(chaos)


def chaos(
    quick: Annotated[bool, typer.Option("--quick", help="Short holds and a 20 s outage: a few minutes.")] = False,
    faults: Annotated[
        str | None, typer.Option("--faults", help=f"Comma-separated subset of: {', '.join(FAULTS)}.")
    ] = None,
    outage_seconds: Annotated[
        float | None,
        typer.Option("--outage-seconds", min=1, help="How long primary-outage keeps the primary down (default 360, quick 20)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Reports go to OUT/<UTC time>/; the cluster to OUT/cluster.")] = Path("var/chaos"),
    shard: Annotated[int, typer.Option("--shard", min=0, help="The shard the shard faults hit.")] = 1,
) -> None:
    """Inject faults one after the other into an own local cluster under a mixed load.

    Keeps a ledger of every acknowledged write and every message a socket should get; after
    each fault checks the error window, which shards saw errors, lost writes, missing socket
    messages, the outbox backlog and `check references`. Exits 1 when any fault fails.
    """
    try:
        config = ChaosConfig.for_run(quick=quick, faults=tuple(parse_faults(faults)),
                                     outage_s=outage_seconds, out_root=out)
        config = replace(config, shard=shard)
    except (FaultError, ValueError) as exc:
        fail(str(exc))
    observer = RichChaosObserver(console)
    try:
        report, run_dir = run_chaos(config, observer)
    except (ChaosError, ClusterError, MissingBinary, PermissionError, RuntimeError) as exc:
        observer.close()
        fail(str(exc))
    observer.close()
    # Piped to a file or CI log, rich would wrap ten columns into 80: keep rows whole there.
    if not console.is_terminal:
        console.width = 220
    console.print(results_table(report.results, title=f"chaos {report.started_utc}"))
    for note in report.notes:
        console.print(f"[yellow]{note}[/]")
    console.print(f"report: {run_dir / 'report.md'} and report.json")
    if not report.passed:
        raise typer.Exit(1)

