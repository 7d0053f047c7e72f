"""`messenger check references`: audit the references that cross shards, and the relay."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import typer
from rich.table import Table

from messenger.cli.console import console, fail
from messenger.storage.audit.checks import reference_checks
from messenger.storage.audit.runner import PROBLEMS, AuditReport, audit
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import Topology, TopologyError, load_topology

group = typer.Typer(help="Audit the cluster's data.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="check")


async def run_audit(topology: Topology, *, repair: bool = False, sample: int = 5) -> AuditReport:
    async with PrimaryPools(topology) as pools:
        return await audit(pools, reference_checks(), OutboxRelay(pools, HANDLERS), repair=repair, sample=sample)


@group.command()
def references(
    repair: Annotated[bool, typer.Option("--repair", help="Fix what is safe to fix (see docs/follows.md).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    sample: Annotated[int, typer.Option("--sample", min=0, help="Findings shown per kind and shard.")] = 5,
    topology: Annotated[str | None, typer.Option("--topology", envvar="MESSENGER_TOPOLOGY")] = None,
) -> None:
    """Scan every shard for references that point at nothing or disagree with their twin.

    Reports per kind and per shard (rows checked, problems, a sample), and the relay's backlog
    and dead letters. Exits 1 when anything is wrong (after --repair: when anything is left),
    2 when a shard could not be scanned.
    """
    try:
        shards = load_topology(topology)
    except TopologyError as exc:
        fail(str(exc))
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # the report names what is down
    report = asyncio.run(run_audit(shards, repair=repair, sample=sample))
    if as_json:
        console.print_json(json.dumps(report.to_json()))
    else:
        _print(report)
    if report.unreachable:
        raise typer.Exit(2)
    if not report.ok:
        raise typer.Exit(1)


def _print(report: AuditReport) -> None:
    table = Table(title="cross-shard references" + (" (repair)" if report.repaired else ""))
    for column in ("kind", "shard", "checked", "problems", "repaired"):
        table.add_column(column, justify="right" if column in ("checked", "repaired") else "left")
    for kind in report.kinds:
        for shard in kind.shards:
            if shard.error:
                problems = f"[red]unreachable[/]: {shard.error}"
            elif shard.found:
                problems = "[red]" + ", ".join(f"{p} {n}" for p, n in sorted(shard.problems.items())) + "[/]"
            else:
                problems = "[green]none[/]"
            table.add_row(kind.kind, shard.shard, str(shard.checked), problems, str(shard.repaired))
    console.print(table)
    for kind in report.kinds:
        for shard in kind.shards:
            for finding in shard.samples:
                ref = " ".join(f"{k}={v}" for k, v in finding.ref.items())
                console.print(f"  {kind.kind} on {shard.shard}: [bold]{finding.problem}[/] "
                              f"({PROBLEMS.get(finding.problem, '')}): {ref} {finding.detail}", highlight=False)

    relay = Table(title="outbox relay")
    for column in ("shard", "pending", "oldest pending", "dead letters", "requeued"):
        relay.add_column(column, justify="left" if column == "shard" else "right")
    for state in report.relay:
        if state.error:
            relay.add_row(state.shard, "?", "?", f"[red]unreachable[/]: {state.error}", "")
            continue
        dead = f"[red]{state.dead}[/]" if state.dead else "0"
        relay.add_row(state.shard, str(state.pending), f"{state.oldest_age_s:.1f} s", dead, str(state.requeued))
    console.print(relay)
    for state in report.relay:
        for letter in state.dead_samples:
            console.print(f"  dead on {state.shard}: {letter.type} {letter.id} after {letter.attempts} "
                          f"attempts: {letter.last_error}", highlight=False)
    if any(s.pending for s in report.relay):
        console.print("[yellow]the relay has pending events: some findings may be in flight[/]")
    verdict = "[green]ok[/]" if report.ok else f"[red]{report.remaining} problem(s) left[/]"
    console.print(f"references: {verdict}")
