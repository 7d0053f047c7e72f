"""`messenger migrate up | down [REV] | status | new MESSAGE`: per-shard schema migrations."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from messenger.cli.console import console, fail
from messenger.storage.migrator import ShardOutcome, check_drift, migrate, new_revision
from messenger.topology import Topology, TopologyError, load_topology

TopologyOption = Annotated[
    str | None,
    typer.Option("--topology", envvar="MESSENGER_TOPOLOGY", help="Topology file (default var/cluster/topology.toml)."),
]

group = typer.Typer(help="Apply one migration history to every shard primary.")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="migrate")


def _topology(path: str | None) -> Topology:
    try:
        return load_topology(path)
    except TopologyError as exc:
        fail(str(exc))


def _run(topology: Topology, direction: str, revision: str) -> None:
    def report(outcome: ShardOutcome) -> None:
        if outcome.ok:
            moved = "unchanged" if outcome.before == outcome.after else f"{outcome.before or 'base'} → {outcome.after or 'base'}"
            console.print(f"  [green]✓[/] {outcome.shard}: {moved}")
        else:
            console.print(f"  [red]✗[/] {outcome.shard}: {outcome.error} (now at {outcome.after or 'base'})")

    console.print(f"migrating {len(topology.shards)} shards {direction} to {revision}")
    outcomes = migrate(topology, direction, revision, on_shard_done=report)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        fail(
            f"{len(failed)} of {len(outcomes)} shards failed ({', '.join(o.shard for o in failed)}); "
            "the others are consistent. Fix the cause and run the command again to finish."
        )


@group.command()
def up(revision: Annotated[str, typer.Argument()] = "head", topology: TopologyOption = None) -> None:
    """Upgrade every shard (default: to head)."""
    _run(_topology(topology), "up", revision)


@group.command()
def down(revision: Annotated[str, typer.Argument()] = "-1", topology: TopologyOption = None) -> None:
    """Downgrade every shard (default: one revision; `base` removes the schema)."""
    _run(_topology(topology), "down", revision)


@group.command()
def status(topology: TopologyOption = None) -> None:
    """Each shard's revision against head; exits non-zero on drift or an unreachable shard."""
    report = check_drift(_topology(topology))
    table = Table(title=f"migrations (head {report.head})")
    table.add_column("shard")
    table.add_column("revision")
    table.add_column("state")
    for shard, rev in sorted(report.revisions.items()):
        state = "[green]at head[/]" if rev == report.head else "[yellow]behind[/]"
        table.add_row(shard, rev or "(none)", state)
    for shard, error in sorted(report.unreachable.items()):
        table.add_row(shard, "?", f"[red]unreachable[/]: {error}")
    console.print(table)
    if not report.ok or report.unreachable:
        if not report.ok:
            console.print(report.message)
        raise typer.Exit(1)


@group.command()
def new(message: Annotated[str, typer.Argument(help="What the revision does.")]) -> None:
    """Create the next numbered revision file."""
    path = new_revision(message)
    console.print(f"created {path}")
