"""`messenger shards add/remove/status/resume/rollback`: run the resharding workflow
(docs/resharding.md) and report on it. The state lives under `var/reshard/<id>/`."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from redis.exceptions import RedisError
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from messenger.cli.console import console, fail
from messenger.cli.reshard_report import distribution_table, phase_table, report_json, write_report
from messenger.cluster.layout import DEFAULT_DATA_DIR
from messenger.cluster.local import ClusterError, LocalCluster
from messenger.storage.migrator import migrate
from messenger.storage.redis.reshard_status import announce
from messenger.storage.resharding.counts import ShardsNotReady, check_shards
from messenger.storage.resharding.plan import (
    PlanError,
    ReshardPlan,
    next_shard_indexes,
    plan_add,
    plan_remove,
    planned_shard,
)
from messenger.storage.resharding.redis_calls import adoption, call_redis, publish_ring
from messenger.storage.resharding.switch import SwitchAborted
from messenger.storage.resharding.workflow import (
    ROLLED_BACK,
    Progress,
    Reshard,
    RowsProgress,
    StateStore,
    WorkflowError,
    WorkflowState,
    new_workflow_id,
)
from messenger.topology import (
    DEFAULT_TOPOLOGY_PATH,
    ShardConfig,
    Topology,
    TopologyError,
    load_topology,
)

StateDir = Annotated[
    Path, typer.Option("--state-dir", envvar="MESSENGER_RESHARD_DIR", help="Where workflows keep their state.")
]
TopologyOption = Annotated[str | None, typer.Option("--topology", envvar="MESSENGER_TOPOLOGY")]
DEFAULT_STATE_DIR = Path("var/reshard")


class AnnouncedStateStore(StateStore):
    """Saves the state, and announces its summary in Redis for the operator's page (best
    effort: the workflow never waits on the page)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._last_announce = 0.0

    def save(self, state: WorkflowState) -> None:
        super().save(state)
        now = time.monotonic()
        if state.phase == "copy" and "progress" in state.findings and now - self._last_announce < 2.0:
            return
        self._last_announce = now
        with contextlib.suppress(RedisError, OSError):
            summary = report_json(state)
            call_redis(state.plan.new.redis_url, lambda redis: announce(redis, summary), timeout_s=1.0)


def register(group: typer.Typer) -> None:
    group.command()(add)
    group.command()(remove)
    group.command()(status)
    group.command()(resume)
    group.command()(rollback)


def add(
    count: Annotated[int, typer.Option("--count", help="How many shards to add (local cluster).")] = 1,
    rw_dsn: Annotated[str | None, typer.Option(help="The new shard's writes, through its pooler.")] = None,
    ro_dsn: Annotated[str | None, typer.Option(help="The new shard's reads (its replica), through its pooler.")] = None,
    primary_dsn: Annotated[str | None, typer.Option(help="Direct to the new primary (replication, admin).")] = None,
    replica_dsn: Annotated[str | None, typer.Option(help="Direct to the new replica.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before starting.")] = False,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The local cluster's data.")] = DEFAULT_DATA_DIR,
    topology: TopologyOption = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Add shards, then move onto them the keys the new ring gives them.

    On the local cluster (the default) the new shards' servers are created on the next ports
    and migrated. For servers described by hand, give the new shard's four DSNs (its database
    migrated to head with `messenger migrate up`); then one shard is added.
    """
    dsns = (rw_dsn, ro_dsn, primary_dsn, replica_dsn)
    if any(dsns) and not all(dsns):
        fail("give all four of the new shard's --rw-dsn, --ro-dsn, --primary-dsn and --replica-dsn, or none "
             "(then the local cluster creates the servers)")
    local = None if all(dsns) else _local_cluster(data_dir)
    if local is not None and topology is None:
        topology = str(local.topology_path)
    current = _load(topology)
    if all(dsns):
        if count != 1:
            fail("with DSNs, add one shard at a time")
        (index,) = next_shard_indexes(current, 1)
        joining: tuple[ShardConfig, ...] = (ShardConfig(index, f"shard_{index}", *(str(d) for d in dsns)),)
    else:
        joining = tuple(planned_shard(i) for i in next_shard_indexes(current, count))
    try:
        reshard = plan_add(current, joining)
    except PlanError as exc:
        fail(str(exc))
    store = AnnouncedStateStore(state_dir)
    _preflight(store, reshard, current.shards, yes=yes)
    if local is not None:
        joining = _create_local_shards(local, current, count)
        reshard = plan_add(current, joining)
    _ready((*current.shards, *joining))
    _run(store, WorkflowState(new_workflow_id(), reshard))


def _local_cluster(data_dir: Path) -> LocalCluster:
    try:
        local = LocalCluster(data_dir)
    except (ClusterError, ValueError) as exc:
        fail(str(exc))
    if not local.exists:
        fail(f"no local cluster in {local.data_dir}: run `messenger cluster up`, or give the new shard's DSNs")
    return local


def _create_local_shards(local: LocalCluster, current: Topology, count: int) -> tuple[ShardConfig, ...]:
    servers = local.state.shards
    if servers != max(current.shard_indexes) + 1:
        fail(f"the cluster in {local.data_dir} has {servers} shards' servers but the ring ends at "
             f"shard {max(current.shard_indexes)}: adding after a removal is not supported locally yet")
    with console.status("creating the new shards' servers"):
        try:
            created = local.add_shards(count)
        except (ClusterError, RuntimeError) as exc:
            fail(str(exc))
    console.print(f"servers up for {', '.join(s.name for s in created)}; migrating them")
    failed = [o for o in migrate(replace(current, shards=created)) if not o.ok]
    if failed:
        fail(f"migrating the new shards failed: {failed}")
    return created


def remove(
    shard: Annotated[int, typer.Argument(help="The index of the shard to drain and retire.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before starting.")] = False,
    topology: TopologyOption = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Drain a shard onto the others, then take it out of the ring."""
    current = _load(topology)
    try:
        reshard = plan_remove(current, shard)
    except PlanError as exc:
        fail(str(exc))
    store = AnnouncedStateStore(state_dir)
    _preflight(store, reshard, current.shards, yes=yes)
    _run(store, WorkflowState(new_workflow_id(), reshard))


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable state.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The running or last workflow: its phase and what each finished phase found."""
    state = _latest(state_dir)
    if as_json:
        console.print_json(json.dumps(state.to_json()))
        return
    plan = state.plan
    console.print(
        f"workflow [bold]{state.id}[/] ({plan.kind}): shards {list(plan.old.shard_indexes)} → "
        f"{list(plan.new.shard_indexes)}, epoch {plan.old.epoch} → {plan.new.epoch}; phase [bold]{state.phase}[/]"
    )
    console.print(phase_table(state))
    if (rows := distribution_table(state)) is not None:
        console.print(rows)


def resume(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Continue the last workflow from its persisted phase (after a crash, Ctrl-C or a refusal)."""
    state = _latest(state_dir)
    if state.phase in ("done", ROLLED_BACK):
        fail(f"workflow {state.id} is {state.phase}: nothing to resume")
    _run(AnnouncedStateStore(state_dir), state)


def rollback(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Back to the old ring with nothing lost, from any phase before clean-up."""
    store = AnnouncedStateStore(state_dir)
    state = _latest(state_dir)
    try:
        with store.locked():
            _reshard(store, state).rollback()
    except (WorkflowError, SwitchAborted, psycopg.Error) as exc:
        fail(str(exc))
    _write_report(store, state)
    console.print(f"workflow {state.id} rolled back: the ring is back at shards {list(state.plan.old.shard_indexes)}")


def _load(path: str | None) -> Topology:
    try:
        return load_topology(path)
    except TopologyError as exc:
        fail(str(exc))


def _latest(state_dir: Path) -> WorkflowState:
    state = AnnouncedStateStore(state_dir).latest()
    if state is None:
        fail(f"no resharding workflow under {state_dir}: start one with `messenger shards add` or `remove`")
    return state


def _preflight(store: StateStore, reshard: ReshardPlan, shards: tuple[ShardConfig, ...], *, yes: bool) -> None:
    """Refuse while another workflow is unfinished or a shard is not ready; show the plan and ask."""
    _refuse_if_running(store)
    _ready(shards)
    _announce(reshard, yes=yes)


def _refuse_if_running(store: StateStore) -> None:
    running = store.latest()
    if running is not None and running.phase not in ("done", ROLLED_BACK):
        fail(f"workflow {running.id} is at phase {running.phase}: `messenger shards resume` or `rollback` it first")


def _ready(shards: tuple[ShardConfig, ...]) -> None:
    try:
        check_shards(shards)
    except ShardsNotReady as exc:
        fail(f"cannot start: {exc}")


def _announce(reshard: ReshardPlan, *, yes: bool) -> None:
    console.print(
        f"{reshard.kind}: shards {list(reshard.old.shard_indexes)} → {list(reshard.new.shard_indexes)}, "
        f"epoch {reshard.old.epoch} → {reshard.new.epoch}; [bold]{reshard.moved_fraction:.2%}[/] of the key "
        f"space moves over {len(reshard.routes)} routes (`messenger shards plan` shows the rows)"
    )
    if not yes and not typer.confirm("start the workflow?"):
        fail("nothing changed")


class WorkflowDisplay:
    """A line for what the workflow does now, and a bar per phase and table for its rows."""

    def __init__(self, workflow: str) -> None:
        self.bars = Bars(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self._workflow = workflow
        self._line = self.bars.add_task(f"{workflow}: starting", total=None)
        self._tables: dict[tuple[str, str], TaskID] = {}

    def say(self, line: str) -> None:
        self.bars.update(self._line, description=f"{self._workflow}: {line}")

    def rows(self, phase: str, table: str, done: int, total: int) -> None:
        if not total:
            return
        task = self._tables.get((phase, table))
        if task is None:
            task = self._tables[(phase, table)] = self.bars.add_task(f"  {phase} {table}", total=total)
        self.bars.update(task, completed=min(done, total), total=total)


def _run(store: StateStore, state: WorkflowState) -> None:
    display = WorkflowDisplay(state.id)
    try:
        with store.locked():
            store.save(state)
            with display.bars:
                _reshard(store, state, display).run()
                display.say(state.phase)
    except (WorkflowError, SwitchAborted, psycopg.Error) as exc:
        fail(f"{exc} (state kept under {store.path(state.id).parent}; `messenger shards resume` goes on)")
    except KeyboardInterrupt:
        fail(f"interrupted at phase {state.phase}: `messenger shards resume` goes on, `rollback` goes back", 130)
    finally:
        _write_report(store, state)
    status(as_json=False, state_dir=store.root)


def _write_report(store: StateStore, state: WorkflowState) -> None:
    try:
        files = write_report(state, store.path(state.id).parent)
    except OSError as exc:
        console.print(f"[yellow]the report could not be written: {exc}[/]")
        return
    console.print("report: " + ", ".join(str(f) for f in files))


def _reshard(store: StateStore, state: WorkflowState, display: WorkflowDisplay | None = None) -> Reshard:
    path = state.plan.new.path or DEFAULT_TOPOLOGY_PATH
    say: Progress = display.say if display else lambda _: None
    rows: RowsProgress = display.rows if display else lambda *_: None

    def publish(new: Topology) -> None:
        publish_ring(new, path)
        say(f"published epoch {new.epoch} to {path} and Redis")

    def adopted(epoch: int) -> bool:
        everywhere, laggards = adoption(state.plan.new.redis_url, epoch)
        if not everywhere:
            say(f"waiting for {len(laggards)} processes to adopt epoch {epoch}: {', '.join(laggards[:5])}")
        return everywhere

    return Reshard(store, state, publish, adopted, progress=say, rows=rows)
