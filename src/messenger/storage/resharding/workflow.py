"""A reshard as a persisted sequence of phases: copy, verify, switch, clean-up.

The state (plan, phase, what each phase found) is written to `<state_dir>/<id>/state.json`
after every phase, so `resume` continues where a crash or Ctrl-C stopped it: every phase is
idempotent (it checks the catalogs before creating anything). One workflow runs at a time:
`<state_dir>/lock` is held for the whole run, and a second start names the one running.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from messenger.storage.resharding.cleanup import (
    Deleted,
    delete_moved_rows,
    drop_replication,
    inverted,
)
from messenger.storage.resharding.counts import (
    connect,
    count_moving_rows,
    first_line,
    route_counts,
    shard_rows,
)
from messenger.storage.resharding.plan import ReshardPlan, Route
from messenger.storage.resharding.replication import (
    CopyState,
    RouteNames,
    copy_state,
    create_publication,
    create_subscription,
    fence,
    unfence,
)
from messenger.storage.resharding.switch import switch, turn_around
from messenger.storage.resharding.verify import verify_route
from messenger.topology import ShardConfig, Topology

PHASES = ("copy", "verify", "switch", "cleanup", "done")
ROLLED_BACK = "rolled_back"
COPY_TIMEOUT_S = 3600.0
WAIT_TIMEOUT_S = 600.0
"""How long a phase waits for a shard that does not answer before it stops (`resume` goes on)."""
T = TypeVar("T")


class WorkflowError(Exception):
    """The workflow cannot start or go on (locked, verification failed, nothing to resume)."""


@dataclass(slots=True)
class WorkflowState:
    id: str
    plan: ReshardPlan
    phase: str = "copy"
    findings: dict[str, Any] = field(default_factory=dict)
    """What each finished phase measured, by phase name (reported, and shown by `status`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.plan.kind,
            "phase": self.phase,
            "old": _topology_json(self.plan.old),
            "new": _topology_json(self.plan.new),
            "routes": [
                {"source": r.source, "target": r.target, "ranges": [list(x) for x in r.ranges]}
                for r in self.plan.routes
            ],
            "findings": self.findings,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkflowState:
        routes = tuple(
            Route(int(r["source"]), int(r["target"]), tuple((int(lo), int(hi)) for lo, hi in r["ranges"]))
            for r in data["routes"]
        )
        plan = ReshardPlan(str(data["kind"]), _topology(data["old"]), _topology(data["new"]), routes)
        return cls(str(data["id"]), plan, str(data["phase"]), dict(data.get("findings", {})))


def _topology_json(topology: Topology) -> dict[str, Any]:
    return {
        "epoch": topology.epoch,
        "redis_url": topology.redis_url,
        "path": str(topology.path) if topology.path else None,
        "shards": [
            {"index": s.index, "name": s.name, "rw_dsn": s.rw_dsn, "ro_dsn": s.ro_dsn,
             "primary_dsn": s.primary_dsn, "replica_dsn": s.replica_dsn}
            for s in topology.shards
        ],
    }


def _topology(data: dict[str, Any]) -> Topology:
    shards = tuple(ShardConfig(**s) for s in data["shards"])
    path = Path(data["path"]) if data.get("path") else None
    return Topology(int(data["epoch"]), shards, str(data["redis_url"]), path)


def new_workflow_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%d%H%M%S")


class StateStore:
    """Where workflows keep their state, and the lock that lets one run at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, workflow: str) -> Path:
        return self.root / workflow / "state.json"

    def save(self, state: WorkflowState) -> None:
        file = self.path(state.id)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2))
        tmp.chmod(0o600)  # it holds the shards' DSNs
        tmp.replace(file)

    def latest(self) -> WorkflowState | None:
        files = sorted(self.root.glob("r*/state.json"))
        return WorkflowState.from_json(json.loads(files[-1].read_text())) if files else None

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                running = self.latest()
                name = f"{running.id} ({running.plan.kind}, phase {running.phase})" if running else "another"
                raise WorkflowError(f"workflow {name} is running: wait for it, or stop it first") from None
            yield
        finally:
            os.close(fd)


Progress = Callable[[str], None]
RowsProgress = Callable[[str, str, int, int], None]
"""(phase, table, rows done, rows in all), as copy and clean-up go."""


class Reshard:
    """Runs a workflow's phases from wherever its state says, saving after each."""

    def __init__(
        self,
        store: StateStore,
        state: WorkflowState,
        publish: Callable[[Topology], None],
        adopted: Callable[[int], bool],
        *,
        progress: Progress = lambda _: None,
        rows: RowsProgress = lambda *_: None,
        wait_s: float = WAIT_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.state = state
        self._publish = publish
        self._adopted = adopted
        self._progress = progress
        self._rows = rows
        self._cleared: dict[str, int] = {}
        self._wait_s = wait_s

    def shard(self, index: int) -> ShardConfig:
        plan = self.state.plan
        for shard in (*plan.new.shards, *plan.old.shards):
            if shard.index == index:
                return shard
        raise KeyError(index)

    def run(self, *, until: str = "done") -> WorkflowState:
        """Run phases until `until` is the current phase (or the workflow is done)."""
        steps = {"copy": self._copy, "verify": self._verify, "switch": self._switch, "cleanup": self._cleanup}
        if "before" not in self.state.findings and self.state.phase == "copy":
            self.state.findings["before"] = self._rows_per_shard()
            self.store.save(self.state)
        while self.state.phase != until and self.state.phase in steps:
            phase = self.state.phase
            self._progress(f"{phase}…")
            started = time.monotonic()
            found = steps[phase]()
            found["seconds"] = round(time.monotonic() - started, 3)
            self.state.findings[phase] = found
            self.state.phase = PHASES[PHASES.index(phase) + 1]
            self.state.findings.pop("progress", None)
            if self.state.phase == "done":
                self.state.findings["after"] = self._rows_per_shard()
            self.store.save(self.state)
        return self.state

    def _rows_per_shard(self) -> dict[str, dict[str, int]]:
        """Per shard on either side of the change (once each) and table, the rows it holds."""
        plan = self.state.plan
        shards = tuple({s.index: s for s in (*plan.old.shards, *plan.new.shards)}.values())
        return self._patiently("counting rows per shard", partial(shard_rows, shards))

    def _patiently(self, what: str, step: Callable[[], T]) -> T:
        """Run `step`; while a shard does not answer, say so and try again, up to the wait bound."""
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                return step()
            except psycopg.OperationalError as exc:
                reason = first_line(exc)
                if time.monotonic() > deadline:
                    raise WorkflowError(
                        f"{what}: {reason}; stopped after waiting {self._wait_s:.0f} s "
                        "(the state is kept: `messenger shards resume` when the shard is back)"
                    ) from exc
                self._progress(f"{what} waits: {reason}")
                time.sleep(1.0)

    def _copy(self) -> dict[str, Any]:
        plan = self.state.plan
        for route in plan.routes:
            source, target = self.shard(route.source), self.shard(route.target)
            self._patiently(f"starting the copy {source.name} → {target.name}",
                            partial(self._start_copy, route, source, target))
        moving = self.state.findings.get("moving")
        if moving is None:
            counted = self._patiently("counting the moving rows", partial(count_moving_rows, plan))
            moving = self.state.findings["moving"] = {t: n for t, (n, _) in counted.by_table().items()}
            self.store.save(self.state)
        started = time.monotonic()
        deadline = started + COPY_TIMEOUT_S
        while True:
            states = self._patiently("copy", self._copy_states)
            ready = sum(s.ready for s in states)
            total = sum(s.tables for s in states)
            copied = self._patiently("copy", self._rows_on_targets)
            for table, rows in copied.items():
                self._rows("copy", table, rows, moving.get(table, 0))
            self._report_copy(copied, moving, ready, total, started)
            if all(s.copied for s in states):
                return {"tables": total, "rows": sum(copied.values())}
            if time.monotonic() > deadline:
                raise WorkflowError(f"the copy did not finish within {COPY_TIMEOUT_S:.0f} s")
            time.sleep(1.0)

    def _rows_on_targets(self) -> dict[str, int]:
        copied: dict[str, int] = {}
        for route in self.state.plan.routes:
            for table, rows in route_counts(self.shard(route.target), route).items():
                copied[table] = copied.get(table, 0) + rows
        return copied

    def _report_copy(self, copied: dict[str, int], moving: dict[str, int], ready: int, total: int,
                     started: float) -> None:
        """Say how far the copy is, and keep it in the state for `status` in another terminal."""
        done, whole = sum(copied.values()), sum(moving.values())
        elapsed = time.monotonic() - started
        eta = round(elapsed * (whole - done) / done, 1) if 0 < done < whole else None
        self._progress(f"copy: {ready}/{total} tables copied and streaming, {done:,}/{whole:,} rows")
        self.state.findings["progress"] = {
            "phase": "copy", "tables_ready": ready, "tables": total, "rows": {t: [copied.get(t, 0), n] for t, n in moving.items()},
            "eta_s": eta, "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.store.save(self.state)

    def _start_copy(self, route: Route, source: ShardConfig, target: ShardConfig) -> None:
        name = RouteNames(self.state.id, route).copy
        create_publication(source, name, route.ranges)
        fence(target, self.state.id, route.ranges, "incoming")
        create_subscription(target, source, name, copy_data=True)

    def _copy_states(self) -> list[CopyState]:
        """Each route's subscription state, after checking its source answers (a subscription
        whose publisher is down only looks slow from the target)."""
        plan = self.state.plan
        for source in sorted({r.source for r in plan.routes}):
            connect(self.shard(source), statement_timeout_ms=2_000).close()
        return [copy_state(self.shard(r.target), RouteNames(self.state.id, r).copy) for r in plan.routes]

    def _verify(self) -> dict[str, Any]:
        wf, plan = self.state.id, self.state.plan
        routes = []
        for route in plan.routes:
            source, target = self.shard(route.source), self.shard(route.target)
            result = self._patiently(
                f"verifying {source.name} → {target.name}",
                partial(verify_route, wf, route, source, target, RouteNames(wf, route).copy),
            )
            routes.append({
                "source": source.name, "target": target.name, "rows": result.rows,
                "freeze_s": round(result.freeze_s, 4), "lsn": result.lsn,
                "diffs": [
                    {"table": d.table, "range": list(d.range), "missing": d.missing, "extra": d.extra,
                     "different": d.different, "samples": list(d.samples)}
                    for d in result.diffs
                ],
            })
            if not result.ok:
                self.state.findings["verify"] = {"routes": routes}
                self.store.save(self.state)
                raise WorkflowError(
                    f"{target.name} differs from {source.name} in {len(result.diffs)} ranges: the switch "
                    f"is refused (see `messenger shards status`; `rollback` undoes the copy)"
                )
        return {"routes": routes, "rows": sum(r["rows"] for r in routes)}

    def _switch(self) -> dict[str, Any]:
        plan = self.state.plan
        if self.state.findings.get("published_epoch") == plan.new.epoch:
            # Stopped after the topology went out: the sources' fences and the turn-around of
            # the replication may be left to do.
            for route in plan.routes:
                fence(self.shard(route.source), self.state.id, route.ranges, "moved")
            turn_around(self.state.id, plan, self.state.findings["reverse_from"])
            return {"resumed_after_publish": True}
        report = switch(self.state.id, plan, self._published, turning=self._turning)
        return {"frozen_s": round(report.frozen_s, 4), "lsns": report.lsns, "steps": report.steps}

    def _turning(self, reverse_from: Mapping[str, str]) -> None:
        self.state.findings["reverse_from"] = dict(reverse_from)
        self.store.save(self.state)

    def _published(self, topology: Topology) -> None:
        """Publish, then remember it at once: from here on the way back is the inverted switch."""
        self._publish(topology)
        self.state.findings["published_epoch"] = topology.epoch
        self.store.save(self.state)

    def _cleanup(self) -> dict[str, Any]:
        wf, plan = self.state.id, self.state.plan
        deadline = time.monotonic() + 60
        while not self._adopted(plan.new.epoch):
            if time.monotonic() > deadline:
                raise WorkflowError(f"some processes have not adopted epoch {plan.new.epoch} after 60 s: "
                                    "clean-up waits (run `messenger shards resume` later)")
            time.sleep(0.5)
        self.state.findings["cleanup_started"] = True  # from here on there is no way back
        self.store.save(self.state)
        deleted: dict[str, int] = {}
        for route in plan.routes:
            source, target = self.shard(route.source), self.shard(route.target)
            what = f"cleaning up {source.name} → {target.name}"
            self._patiently(what, partial(drop_replication, wf, route, source, target))
            moved = self._patiently(what, partial(delete_moved_rows, route, source, progress=self._deleted))
            for table, rows in moved.items():
                deleted[table] = deleted.get(table, 0) + rows
        return {"deleted": deleted}

    def _deleted(self, step: Deleted) -> None:
        self._cleared[step.table] = self._cleared.get(step.table, 0) + step.rows
        moving = self.state.findings.get("moving", {})
        self._rows("cleanup", step.table, self._cleared[step.table], int(moving.get(step.table, 0)))

    def rollback(self) -> WorkflowState:
        """Back to the old ring with nothing lost, from any phase before clean-up."""
        wf, plan, findings = self.state.id, self.state.plan, self.state.findings
        if self.state.phase in ("done", ROLLED_BACK) or findings.get("cleanup_started"):
            raise WorkflowError(f"workflow {wf} is {self.state.phase}: past clean-up there is no way back")
        if findings.get("published_epoch") == plan.new.epoch:
            # Switched: hand the ranges back through the reverse replication, then empty the
            # shards that gave them back.
            back = inverted(plan)
            turn_around(wf, plan, findings["reverse_from"])  # if a stop came before it
            switch(wf, back, self._publish)
            for route in back.routes:
                drop_replication(wf, route, self.shard(route.source), self.shard(route.target))
                delete_moved_rows(route, self.shard(route.source))
        else:
            for route in plan.routes:
                source, target = self.shard(route.source), self.shard(route.target)
                drop_replication(wf, route, source, target)
                unfence(source, wf, route.ranges)  # a freeze left by a crash mid-switch
                delete_moved_rows(route, target)
                unfence(target, wf, route.ranges)
        self.state.phase = ROLLED_BACK
        self.store.save(self.state)
        return self.state
