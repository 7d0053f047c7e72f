"""The switch: the moment the new ring starts to own the moving ranges.

Before anything is held, each route's reverse replication is made ready (a publication and a
logical slot on the target, a disabled subscription on the source): making a slot waits for
the target's running transactions, which must not happen while writes wait. Then, with every
route's ranges frozen on its source (writes there wait, MF002; every other key writes on):
catch the targets up, check the counts, note where the target's WAL is, lift the targets'
`incoming` fence, publish the new topology, and fence the sources' ranges as `moved`. A
process that has not adopted the new epoch yet then gets MF001 on the source, reloads and
writes on the target.

Only then, with the writes flowing, the replication turns around (`turn_around`): the forward
subscription goes first (a change the reverse one applies on the source must not stream back),
then the reverse slot is advanced to the noted position and its subscription enabled, so it
carries exactly what was written on the target after the switch; `rollback` loses none of it.

Anything failing before the topology is published aborts: the targets fenced again, the
sources' writes released, the forward replication never touched; the old ring stays in force.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from messenger.storage.resharding.counts import connect, first_line, route_counts
from messenger.storage.resharding.freeze import wait_for_writers, wait_until_applied
from messenger.storage.resharding.plan import ReshardPlan, Route
from messenger.storage.resharding.replication import (
    CONTROL_TIMEOUT_MS,
    RouteNames,
    advance_slot,
    create_publication,
    create_slot,
    create_subscription,
    current_lsn,
    drop_publication,
    drop_subscription,
    enable_subscription,
    fence,
    subscription_enabled,
    unfence,
    wal_position,
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
    reverse_from: dict[str, str] = field(default_factory=dict)
    """Per reverse subscription, the target's position from which it carries writes back."""
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds of each step (those while the writes were held, and the preparation and the
    turn-around either side), to see where a long freeze goes."""

    def step(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.steps[name] = round(self.steps.get(name, 0.0) + now - since, 4)
        return now


BEFORE_HOLD_STEPS = ("prepare_reverse", "connect")
HELD_STEPS = ("freeze", "wait_for_writers", "catch_up_and_counts", "publish", "fence_moved")
"""The steps of `SwitchReport.steps`, in order, while writes to the moving ranges wait; those
before them prepare, `turn_around` comes after."""

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _Sides:
    source: Connection
    target: Connection


@contextmanager
def _sessions(routes: Sequence[Route], shard: Callable[[int], ShardConfig]) -> Iterator[list[_Sides]]:
    """One admin connection per route and side, opened before the freeze (a connection costs a
    backend start, several per step otherwise) and closed after."""
    with ExitStack() as stack:
        def open_(index: int) -> Connection:
            return stack.enter_context(connect(shard(index), statement_timeout_ms=CONTROL_TIMEOUT_MS))

        yield [_Sides(open_(r.source), open_(r.target)) for r in routes]


def switch(
    workflow: str,
    plan: ReshardPlan,
    publish: Callable[[Topology], None],
    *,
    turning: Callable[[Mapping[str, str]], None] = lambda _: None,
    timeout_s: float = 2.0,
) -> SwitchReport:
    """Hand the moving ranges to the new ring; `publish` makes every process adopt `plan.new`.
    `turning` is told, before the publication, where each reverse subscription will start
    (`turn_around` needs it if the run stops in between)."""
    report = SwitchReport()
    shard = _shards(plan)
    routes = list(plan.routes)
    at = time.monotonic()
    unfenced = published = False
    try:
        _each(routes, lambda route: prepare_reverse(workflow, route, shard(route.source), shard(route.target)))
        at = report.step("prepare_reverse", at)
        with _sessions(routes, shard) as sides:
            pairs = list(zip(routes, sides, strict=True))
            at = report.step("connect", at)
            started = at
            _each(pairs, lambda p: fence(p[1].source, workflow, p[0].ranges, "frozen"))
            at = report.step("freeze", at)
            _each(sorted({r.source for r in routes}), lambda source: wait_for_writers(shard(source), timeout_s=timeout_s))
            at = report.step("wait_for_writers", at)

            def caught_up(pair: tuple[Route, _Sides]) -> None:
                route, side = pair
                names = RouteNames(workflow, route)
                lsn = current_lsn(side.source)
                wait_until_applied(side.target, names.copy, lsn, timeout_s=timeout_s,
                                   target_name=shard(route.target).name)
                report.lsns[shard(route.source).name] = lsn
                with ThreadPoolExecutor(max_workers=1) as pool:
                    theirs_later = pool.submit(route_counts, side.target, route, timeout_ms=CONTROL_TIMEOUT_MS)
                    mine = route_counts(side.source, route, timeout_ms=CONTROL_TIMEOUT_MS)
                    theirs = theirs_later.result()
                if mine != theirs:
                    wrong = {t: (mine[t], theirs[t]) for t in mine if mine[t] != theirs[t]}
                    raise SwitchAborted(f"{shard(route.target).name} disagrees with {shard(route.source).name} "
                                        f"on the rows of the move (source, target): {wrong}")
                # Nothing writes the ranges on the target until they are unfenced below: the
                # reverse stream starts here, after the last change the forward one applied.
                report.reverse_from[names.back] = wal_position(side.target)

            _each(pairs, caught_up)
            at = report.step("catch_up_and_counts", at)
            turning(dict(report.reverse_from))
            unfenced = True
            _each(pairs, lambda p: unfence(p[1].target, workflow, p[0].ranges))
            publish(plan.new)
            published = True
            at = report.step("publish", at)
            _each(pairs, lambda p: fence(p[1].source, workflow, p[0].ranges, "moved"))
            at = report.step("fence_moved", at)
            report.frozen_s = at - started
    except Exception as exc:
        if published:
            raise  # the new ring is in force; `resume` sets the fences left
        stuck = _abort(workflow, plan, shard, refence_targets=unfenced)
        reason = str(exc) if isinstance(exc, SwitchAborted) else f"the switch was aborted, the old ring stays: {exc}"
        if stuck:
            reason += "; " + "; ".join(stuck)
        raise SwitchAborted(reason) from exc
    turn_around(workflow, plan, report.reverse_from)
    report.step("turn_around", at)
    return report


def prepare_reverse(workflow: str, route: Route, source: ShardConfig, target: ShardConfig) -> None:
    """The reverse replication, ready but not streaming: publication and slot on the target,
    a disabled subscription on the source."""
    names = RouteNames(workflow, route)
    create_publication(target, names.back, route.ranges)
    create_slot(target, names.back)
    create_subscription(source, target, names.back, copy_data=False, slot_exists=True)


def turn_around(workflow: str, plan: ReshardPlan, reverse_from: Mapping[str, str]) -> None:
    """After the publication: forward replication off, then reverse on from the noted
    positions. Idempotent: a reverse subscription already enabled is left streaming."""
    shard = _shards(plan)

    def turn(route: Route) -> None:
        names = RouteNames(workflow, route)
        source, target = shard(route.source), shard(route.target)
        if subscription_enabled(source, names.back):
            return
        drop_subscription(target, names.copy)
        drop_publication(source, names.copy)
        advance_slot(target, names.back, reverse_from[names.back])
        enable_subscription(source, names.back)

    _each(list(plan.routes), turn)


def _abort(
    workflow: str, plan: ReshardPlan, shard: Callable[[int], ShardConfig], *, refence_targets: bool
) -> list[str]:
    """Fence the targets again if they were opened, and release the sources' writes, each step
    on its own: a target that is down must not keep the sources frozen. Returns what could
    not be undone."""
    stuck = []
    if refence_targets:
        for route in plan.routes:
            try:
                fence(shard(route.target), workflow, route.ranges, "incoming")
            except Exception as exc:
                stuck.append(f"{shard(route.target).name}'s incoming ranges are open ({first_line(exc)}): "
                             "`messenger shards rollback` or `resume` puts it right")
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
