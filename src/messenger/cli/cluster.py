"""`messenger cluster up | down | status | destroy | logs`: the local cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from messenger.cli.console import console, fail
from messenger.cluster.binaries import MissingBinary
from messenger.cluster.layout import DEFAULT_DATA_DIR
from messenger.cluster.local import ClusterError, LocalCluster
from messenger.cluster.status import ServerStatus, cluster_status

DataDir = Annotated[Path, typer.Option("--data-dir", help="Where the cluster keeps its data.")]

group = typer.Typer(help="Run the local cluster: shards × (primary, replica, PgBouncer) + Redis.")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="cluster")


def _cluster(data_dir: Path, **kwargs: object) -> LocalCluster:
    try:
        return LocalCluster(data_dir, progress=lambda m: console.print(f"  {m}"), **kwargs)  # type: ignore[arg-type]
    except (ClusterError, ValueError) as exc:
        fail(str(exc))


@group.command()
def up(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    shards: Annotated[int | None, typer.Option(help="Number of shards (default 5).")] = None,
    base_port: Annotated[
        int | None, typer.Option(help="Primaries at base+i, replicas base+10+i, PgBouncers base+990+i, Redis base+950 (default 5440).")
    ] = None,
) -> None:
    """Create what is missing and start what is stopped (idempotent)."""
    cluster = _cluster(data_dir, shards=shards, base_port=base_port)
    console.print(f"cluster in {cluster.data_dir}: {cluster.state.shards} shards")
    try:
        topology = cluster.up()
    except (ClusterError, MissingBinary, PermissionError, RuntimeError) as exc:
        fail(str(exc))
    console.print(f"[green]up[/]: {len(topology.shards)} shards, topology in {cluster.topology_path}")


@group.command()
def down(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Stop every server (fast shutdown), keeping the data."""
    cluster = _cluster(data_dir)
    if not cluster.exists:
        fail(f"no cluster in {cluster.data_dir}")
    cluster.down()


@group.command()
def destroy(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop everything and delete the data directory."""
    cluster = _cluster(data_dir)
    if not cluster.data_dir.exists():
        console.print(f"nothing to destroy in {cluster.data_dir}")
        return
    if not yes and not typer.confirm(f"Delete {cluster.data_dir} and every row in it?"):
        raise typer.Exit(1)
    cluster.destroy()


@group.command()
def status(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Every server: up or down, replication lag, database size, migration version; then each
    shard's largest tables (size with indexes, estimated rows) from its primary's catalog.

    Exits non-zero when anything is down.
    """
    cluster = _cluster(data_dir)
    if not cluster.exists:
        fail(f"no cluster in {cluster.data_dir}: start one with `messenger cluster up`")
    rows = cluster_status(cluster)
    if as_json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        table = Table(title=f"cluster {cluster.data_dir}")
        for column in ("shard", "role", "port", "state", "lag", "size", "migration", "detail"):
            table.add_column(column)
        for r in rows:
            lag = "" if r.lag_bytes is None else f"{r.lag_bytes} B / {r.lag_seconds or 0:.2f} s"
            size = "" if r.size_bytes is None else f"{r.size_bytes / 2**20:.1f} MiB"
            state = "[green]up[/]" if r.up else "[red]down[/]"
            table.add_row(r.shard, r.role, str(r.port), state, lag, size, r.migration or "", r.detail)
        console.print(table)
        console.print(_largest_tables_table(rows))
        up_count = sum(r.up for r in rows)
        console.print(f"{up_count}/{len(rows)} processes up")
    if not all(r.up for r in rows):
        raise typer.Exit(1)


def _largest_tables_table(rows: list[ServerStatus]) -> Table:
    table = Table(title="largest tables (primaries; rows are pg_class estimates)")
    for column in ("shard", "database", "table", "size", "rows"):
        table.add_column(column)
    for r in rows:
        if r.role != "primary":
            continue
        if not r.up:
            table.add_row(r.shard, "[red]down[/]", "", "", "")
            continue
        database = "" if r.size_bytes is None else _mib(r.size_bytes)
        if not r.largest_tables:
            table.add_row(r.shard, database, r.detail or "(no tables)", "", "")
        for i, t in enumerate(r.largest_tables):
            rows_text = "?" if t.rows_estimate is None else f"{t.rows_estimate:,}"
            table.add_row(r.shard if i == 0 else "", database if i == 0 else "", t.table,
                          _mib(t.total_bytes), rows_text)
    return table


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


@group.command()
def logs(
    shard: Annotated[int | None, typer.Argument(help="Shard index (omit for Redis).")] = None,
    role: Annotated[str, typer.Argument(help="primary, replica or pgbouncer.")] = "primary",
    data_dir: DataDir = DEFAULT_DATA_DIR,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
) -> None:
    """Show (or follow) a server's log."""
    cluster = _cluster(data_dir)
    name = "redis" if shard is None else f"shard_{shard}-{role}"
    if role not in ("primary", "replica", "pgbouncer"):
        fail(f"role is primary, replica or pgbouncer, not {role!r}")
    log = cluster.layout.log_file(name)
    if not log.exists():
        fail(f"no log at {log}")
    subprocess.run(["tail", f"-n{lines}", *(["-F"] if follow else []), str(log)], check=False)
