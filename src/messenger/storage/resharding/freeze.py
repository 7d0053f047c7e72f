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


WRITERS = """
SELECT coalesce(array_agg(DISTINCT x.transactionid::text), '{}')
FROM pg_locks x JOIN pg_locks w ON w.virtualtransaction = x.virtualtransaction
WHERE x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted
  AND w.locktype = 'relation' AND w.granted
  AND w.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
  AND x.pid <> pg_backend_pid()
"""
"""The transactions that have written something and are still open: each holds the lock on its
own xid, and a write-mode lock on the relation it wrote (taken before its first row changed).
A transaction that holds row locks only (the relay's claim, `FOR UPDATE`, while its handlers
work on other shards) has not passed the fence: when it writes, its AFTER trigger reads the
fence with a fresh snapshot (READ COMMITTED) and gets MF002."""
STILL_OPEN = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted AND transactionid::text = ANY(%s)
"""


def wait_for_writers(shard: ShardConfig, *, timeout_s: float) -> None:
    """Wait until every transaction that has written on the shard and is running now has ended.

    Only writers: waiting for every open transaction (as this did first) let a relay batch that
    holds its claimed events `FOR UPDATE` for seconds, while it applies them to other shards,
    fail every freeze under a rename load (measured by `messenger bench --reshard`: idle in
    transaction for 6 s on a source, verify aborted with NotCaughtUp after 2 s).
    """
    deadline = time.monotonic() + timeout_s
    with connect(shard, statement_timeout_ms=int(timeout_s * 1000) + 1000) as conn:
        row = conn.execute(WRITERS).fetchone()
        assert row is not None
        writers = list(row[0])
        while writers:
            left = conn.execute(STILL_OPEN, (writers,)).fetchone()
            if left and not left[0]:
                return
            if time.monotonic() > deadline:
                raise NotCaughtUp(f"{shard.name}: transactions that wrote before the freeze still run after "
                                  f"{timeout_s} s")
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
