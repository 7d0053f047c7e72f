"""`messenger seed`: load generated data into the shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from messenger.storage.bulk.distribution import ShardShare, measure_distribution
from messenger.storage.bulk.seed import (
    DEFAULT_BATCH_SIZE,
    SeedError,
    seed_demo_if_empty,
    seed_users,
)
from messenger.topology import Topology, TopologyError, load_topology


def distribution_table(shares: list[ShardShare], title: str = "Users per shard") -> Table:
    """Per-shard rows, share, and deviation from an even split and from the ring's prediction."""
    table = Table(title=title)
    table.add_column("shard")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    table.add_column("vs mean", justify="right")
    table.add_column("ring predicts", justify="right")
    table.add_column("vs ring", justify="right")
    for s in shares:
        table.add_row(
            s.name,
            f"{s.rows:,}",
            f"{s.share:.2%}",
            f"{s.deviation_from_mean:+.2%}",
            f"{s.predicted_share:.2%}",
            f"{s.deviation_from_predicted * 100:+.2f} pp",
        )
    total = sum(s.rows for s in shares)
    table.add_section()
    table.add_row("total", f"{total:,}", "100%" if total else "-", "", "", "")
    return table


def _load(path: Path | None, console: Console) -> Topology:
    try:
        return load_topology(path)
    except TopologyError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def seed_users_command(
    n: Annotated[int, typer.Argument(min=0, help="How many users to generate.")],
    topology: Annotated[
        Path | None,
        typer.Option("--topology", help="Topology file (default: the local cluster's)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows generated per batch (all shards).")
    ] = DEFAULT_BATCH_SIZE,
) -> None:
    """Generate N users and COPY them into every shard's primary in parallel."""
    console = Console()
    topo = _load(topology, console)
    progress = Progress(
        TextColumn("[bold]seeding users"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("users", total=n)
        try:
            result = seed_users(
                topo, n, batch_size=batch_size, on_progress=lambda k: progress.advance(task, k)
            )
        except SeedError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(
        f"Loaded {result.total:,} users into {len(topo.shards)} shards in "
        f"{result.elapsed_s:.1f} s ({result.rows_per_second:,.0f} rows/s)."
    )
    console.print(distribution_table(measure_distribution(topo)))


def seed_demo_command(
    n: Annotated[int, typer.Option("--n", min=1, help="Demo users to add.")] = 1_000,
    topology: Annotated[
        Path | None,
        typer.Option("--topology", help="Topology file (default: the local cluster's)."),
    ] = None,
) -> None:
    """Seed a few demo users, only when no shard holds any user yet (for `make run`)."""
    console = Console()
    topo = _load(topology, console)
    added = seed_demo_if_empty(topo, n)
    console.print(f"Seeded {added:,} demo users." if added else "Users exist already: not seeding.")


def register(app: typer.Typer) -> None:
    """Add the `seed` command group to the CLI."""
    seed_app = typer.Typer(help="Load generated data into the shards.", no_args_is_help=True)
    seed_app.command("users")(seed_users_command)
    seed_app.command("demo")(seed_demo_command)
    app.add_typer(seed_app, name="seed")
