"""`messenger shards`: plan how the ring changes when shards join or leave (docs/resharding.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from messenger.cli import reshard
from messenger.cli.console import console, fail
from messenger.storage.resharding.counts import (
    MovingRows,
    ShardsNotReady,
    check_shards,
    count_moving_rows,
)
from messenger.storage.resharding.plan import (
    PlanError,
    ReshardPlan,
    next_shard_indexes,
    plan_add,
    plan_remove,
    planned_shard,
)
from messenger.storage.sharded_tables import SHARDED_TABLES
from messenger.topology import Topology, TopologyError, load_topology

group = typer.Typer(help="Change the set of shards: plan what moves, move it, report.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    reshard.register(group)
    app.add_typer(group, name="shards")


@group.command()
def plan(
    add: Annotated[int | None, typer.Option("--add", help="Plan adding this many shards.")] = None,
    remove: Annotated[int | None, typer.Option("--remove", help="Plan removing this shard (its index).")] = None,
    count_rows: Annotated[bool, typer.Option("--rows/--no-rows", help="Count the moving rows on the sources.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable plan.")] = False,
    topology: Annotated[str | None, typer.Option("--topology", envvar="MESSENGER_TOPOLOGY")] = None,
) -> None:
    """Show what would move: per source and target shard the ring ranges and their share of
    the key space, and per table the rows. Nothing changes.

    Refuses (exit 1) when a shard is unreachable, at another schema version, or has a sharded
    table the resharding registry does not list.
    """
    if (add is None) == (remove is None):
        fail("give exactly one of --add N or --remove SHARD")
    try:
        current = load_topology(topology)
        if add is not None:
            reshard = plan_add(current, tuple(planned_shard(i) for i in next_shard_indexes(current, add)))
        else:
            assert remove is not None
            reshard = plan_remove(current, remove)
    except (TopologyError, PlanError) as exc:
        fail(str(exc))
    moving = None
    if count_rows:
        try:
            check_shards(current.shards)
        except ShardsNotReady as exc:
            fail(f"cannot plan: {exc}")
        moving = _count_with_progress(reshard, quiet=as_json)
    if as_json:
        console.print_json(json.dumps(plan_json(reshard, moving)))
        return
    _print(reshard, moving)


def _count_with_progress(reshard: ReshardPlan, *, quiet: bool) -> MovingRows:
    steps = len(reshard.routes) * len(SHARDED_TABLES)
    with Progress(console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("counting moving rows", total=steps)
        return count_moving_rows(reshard, progress=lambda _: bar.advance(task))


def plan_json(reshard: ReshardPlan, moving: MovingRows | None) -> dict[str, Any]:
    old, new = reshard.old, reshard.new
    return {
        "kind": reshard.kind,
        "epoch": {"from": old.epoch, "to": new.epoch},
        "shards": {"from": list(old.shard_indexes), "to": list(new.shard_indexes)},
        "moved_fraction": reshard.moved_fraction,
        "routes": [
            {
                "source": old.shard(r.source).name,
                "target": new.shard(r.target).name,
                "ranges": [list(x) for x in r.ranges],
                "fraction": r.fraction,
            }
            for r in reshard.routes
        ],
        "rows": None if moving is None else [
            {"table": table, "moving": n, "on_sources": total}
            for table, (n, total) in moving.by_table().items()
        ],
    }


def _name(topology: Topology, index: int) -> str:
    return topology.shard(index).name


def _print(reshard: ReshardPlan, moving: MovingRows | None) -> None:
    old, new = reshard.old, reshard.new
    console.print(
        f"{reshard.kind}: shards {list(old.shard_indexes)} → {list(new.shard_indexes)}, "
        f"epoch {old.epoch} → {new.epoch}; [bold]{reshard.moved_fraction:.2%}[/] of the key space moves"
    )
    routes = Table(title="ring ranges that move")
    for column in ("from", "to", "ranges", "key space"):
        routes.add_column(column, justify="left" if column in ("from", "to") else "right")
    for r in reshard.routes:
        routes.add_row(_name(old, r.source), _name(new, r.target), str(len(r.ranges)), f"{r.fraction:.2%}")
    console.print(routes)
    if moving is None:
        return
    rows = Table(title="rows that move (counted on the sources)")
    for column in ("table", "moving", "rows on the sources", "share"):
        rows.add_column(column, justify="left" if column == "table" else "right")
    for table, (n, total) in moving.by_table().items():
        rows.add_row(table, f"{n:,}", f"{total:,}", f"{n / total:.2%}" if total else "–")
    console.print(rows)
    console.print("nothing changed: this is a plan")
