"""The switch: the moment the new ring starts to own the moving ranges.

With every route's ranges frozen on its source (writes there wait, MF002; every other key
writes on): catch the targets up, check the counts, turn the replication around (the forward
subscription goes, a reverse one from target to source comes, so `rollback` loses no write
made after the switch), lift the targets' `incoming` fence, publish the new topology, and fence
the sources' ranges as `moved`. A process that has not adopted the new epoch yet then gets
MF001 on the source, reloads and writes on the target.

Anything failing before the topology is published aborts: replication back as it was, the
targets fenced again, the sources' writes released; the old ring stays in force.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from messenger.storage.resharding.counts import first_line, route_counts
from messenger.storage.resharding.freeze import wait_for_writers, wait_until_applied
from messenger.storage.resharding.plan import ReshardPlan, Route
from messenger.storage.resharding.replication import (
    CONTROL_TIMEOUT_MS,
    RouteNames,
    create_publication,
    create_subscription,
    current_lsn,
    drop_publication,
    drop_subscription,
    fence,
    unfence,
)
from messenger.topology import ShardConfig, Topology

T = TypeVar("T")


def _each(items: Sequence[T], work: Callable[[T], object]) -> None:
    """`work` on every item at once (each route has its own source; their round trips are
    what the writes wait for), then the first failure, once all of them have ended."""
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="switch") as pool:
        futures = [pool.submit(work, item) for item in items]
    for future in futures:
        future.result()


class SwitchAborted(Exception):
    """The switch did not happen; the old ring is in force and writes are released."""


@dataclass(slots=True)
class SwitchReport:
    frozen_s: float = 0.0
    """How long writes to the moving ranges were held."""
    lsns: dict[str, str] = field(default_factory=dict)
    """Per source, the position the targets had applied when the ranges changed owner."""
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds of each step while the writes were held, to see where a long freeze goes."""

    def step(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.steps[name] = round(self.steps.get(name, 0.0) + now - since, 4)
        return now


def switch(
    workflow: str,
    plan: ReshardPlan,
    publish: Callable[[Topology], None],
    *,
    timeout_s: float = 2.0,
) -> SwitchReport:
    """Hand the moving ranges to the new ring; `publish` makes every process adopt `plan.new`."""
    report = SwitchReport()
    shard = _shards(plan)
    routes = list(plan.routes)
    started = time.monotonic()
    turned: list[Route] = []
    try:
        _each(routes, lambda route: fence(shard(route.source), workflow, route.ranges, "frozen"))
        at = report.step("freeze", started)
        _each(sorted({r.source for r in routes}), lambda source: wait_for_writers(shard(source), timeout_s=timeout_s))
        at = report.step("wait_for_writers", at)

        def caught_up(route: Route) -> None:
            names = RouteNames(workflow, route)
            lsn = current_lsn(shard(route.source))
            wait_until_applied(shard(route.target), names.copy, lsn, timeout_s=timeout_s)
            report.lsns[shard(route.source).name] = lsn
            mine = route_counts(shard(route.source), route, timeout_ms=CONTROL_TIMEOUT_MS)
            theirs = route_counts(shard(route.target), route, timeout_ms=CONTROL_TIMEOUT_MS)
            if mine != theirs:
                wrong = {t: (mine[t], theirs[t]) for t in mine if mine[t] != theirs[t]}
                raise SwitchAborted(f"{shard(route.target).name} disagrees with {shard(route.source).name} "
                                    f"on the rows of the move (source, target): {wrong}")

        _each(routes, caught_up)
        at = report.step("catch_up_and_counts", at)
        turned += routes
        _each(routes, lambda route: _turn_around(workflow, route, shard(route.source), shard(route.target)))
        at = report.step("turn_around", at)
        _each(routes, lambda route: unfence(shard(route.target), workflow, route.ranges))
        publish(plan.new)
        at = report.step("publish", at)
    except Exception as exc:
        stuck = _abort(workflow, plan, turned, shard)
        reason = str(exc) if isinstance(exc, SwitchAborted) else f"the switch was aborted, the old ring stays: {exc}"
        if stuck:
            reason += "; " + "; ".join(stuck)
        raise SwitchAborted(reason) from exc
    _each(routes, lambda route: fence(shard(route.source), workflow, route.ranges, "moved"))
    report.step("fence_moved", at)
    report.frozen_s = time.monotonic() - started
    return report


def _abort(
    workflow: str, plan: ReshardPlan, turned: list[Route], shard: Callable[[int], ShardConfig]
) -> list[str]:
    """Put replication back and release the sources' writes, each step on its own: a target
    that is down must not keep the sources frozen. Returns what could not be undone."""
    stuck = []
    for route in turned:
        try:
            _turn_back(workflow, route, shard(route.source), shard(route.target))
        except Exception as exc:
            stuck.append(f"replication {shard(route.source).name} → {shard(route.target).name} is not "
                         f"restored ({first_line(exc)}): `messenger shards rollback` or `resume` puts it right")
    for source in sorted({r.source for r in plan.routes}):
        try:
            for route in plan.routes_from(source):
                unfence(shard(source), workflow, route.ranges)
        except Exception as exc:
            stuck.append(f"{shard(source).name}'s moving ranges stay frozen ({first_line(exc)}): "
                         "`messenger shards rollback` releases them when it answers")
    return stuck


def _shards(plan: ReshardPlan) -> Callable[[int], ShardConfig]:
    known = {s.index: s for s in (*plan.old.shards, *plan.new.shards)}
    return known.__getitem__


def _turn_around(workflow: str, route: Route, source: ShardConfig, target: ShardConfig) -> None:
    """Forward replication off, reverse on. Both sides' ranges are still fenced, so the
    reverse slot, created now, starts exactly where the forward stream ended."""
    names = RouteNames(workflow, route)
    drop_subscription(target, names.copy)
    drop_publication(source, names.copy)
    create_publication(target, names.back, route.ranges)
    create_subscription(source, target, names.back, copy_data=False)


def _turn_back(workflow: str, route: Route, source: ShardConfig, target: ShardConfig) -> None:
    """Undo `_turn_around` (nothing was written to the ranges meanwhile: all fenced)."""
    names = RouteNames(workflow, route)
    drop_subscription(source, names.back)
    drop_publication(target, names.back)
    fence(target, workflow, route.ranges, "incoming")
    create_publication(source, names.copy, route.ranges)
    create_subscription(target, source, names.copy, copy_data=False)
