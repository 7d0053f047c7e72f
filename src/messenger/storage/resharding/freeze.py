"""Holding a route's writes on its source for a moment: the consistent point of a reshard.

A `frozen` fence makes every new write into the ranges fail with MF002, which the routers
retry for up to 3 s. Transactions that passed the fence check before it committed may still
be running, so the point is taken only after every transaction that was running then is
over: from there the source's WAL position covers every write the ranges will get, and once
the subscription has applied it, source and target hold the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from messenger.storage.resharding.counts import connect
from messenger.storage.resharding.plan import Route
from messenger.storage.resharding.replication import applied_past, current_lsn, fence, unfence
from messenger.topology import ShardConfig

POLL_S = 0.005


class NotCaughtUp(Exception):
    """The source's writers or the subscription did not get there within the bound."""


def wait_for_writers(shard: ShardConfig, *, timeout_s: float) -> None:
    """Wait until every transaction running on the shard now has ended."""
    deadline = time.monotonic() + timeout_s
    with connect(shard, statement_timeout_ms=int(timeout_s * 1000) + 1000) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())").fetchone()
        assert row is not None
        horizon = row[0]
        while True:
            done = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %s", (horizon,)).fetchone()
            if done and done[0]:
                return
            if time.monotonic() > deadline:
                raise NotCaughtUp(f"{shard.name}: transactions older than the freeze still run after {timeout_s} s")
            time.sleep(POLL_S)


def wait_until_applied(target: ShardConfig, subscription: str, lsn: str, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not applied_past(target, subscription, lsn):
        if time.monotonic() > deadline:
            raise NotCaughtUp(f"{target.name} had not applied {lsn} from {subscription} after {timeout_s} s")
        time.sleep(POLL_S)


@contextmanager
def frozen(
    workflow: str,
    route: Route,
    source: ShardConfig,
    target: ShardConfig,
    subscription: str,
    *,
    timeout_s: float = 2.0,
) -> Iterator[str]:
    """Freeze the route's ranges on the source, wait until the target has every write made
    before, and yield the source LSN of that point; the freeze is lifted on the way out,
    whatever happened (a failed catch-up aborts with the writes released)."""
    fence(source, workflow, route.ranges, "frozen")
    try:
        wait_for_writers(source, timeout_s=timeout_s)
        lsn = current_lsn(source)
        wait_until_applied(target, subscription, lsn, timeout_s=timeout_s)
        yield lsn
    finally:
        unfence(source, workflow, route.ranges)
