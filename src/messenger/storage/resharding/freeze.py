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

from messenger.storage.resharding.counts import Admin, connect
from messenger.storage.resharding.plan import Route
from messenger.storage.resharding.replication import applied_past, current_lsn, fence, unfence
from messenger.topology import ShardConfig

POLL_S = 0.005


class NotCaughtUp(Exception):
    """The source's writers or the subscription did not get there within the bound."""


GRACE_S = 1.0
"""How long writers older than the freeze may take to end by themselves."""

OLDER_WRITERS_SQL = """
SELECT DISTINCT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() AND a.xact_start < %s
  AND l.locktype = 'relation' AND l.granted
  AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
"""
"""Client transactions open since before the given time (the fence's commit) that hold a
write-mode lock on a relation: a writing statement takes it when it opens its table, before
its first row changes and before its transaction has an id. A transaction that only reads or
holds row locks (the relay's claim, `FOR UPDATE`, while its handlers work on other shards) has
not passed the fence: its next write reads the fence with a fresh snapshot (READ COMMITTED)
and gets MF002."""


def wait_for_writers(shard: ShardConfig, *, timeout_s: float, grace_s: float = GRACE_S) -> int:
    """Wait until every transaction that was writing on the shard when the fence committed
    has ended; returns how many had to be ended for it.

    By transaction start and write locks, not by transaction id (a snapshot's xmax is the last
    completed xid + 1, so the newest writers were not below it, and a statement that began
    before the fence gets its id only when it writes). One still open after `grace_s` is
    terminated: it may have written into the frozen ranges, and its commit after the
    consistent point would be lost to the target; it may also be waiting, idle in its
    transaction, on a write the freeze holds (a relay batch that marked an event failed and
    whose next handler writes into the ranges), which would wait for it in turn. Its work rolls
    back and its caller retries (the relay always does; a request gets an error).
    """
    deadline = time.monotonic() + timeout_s
    ended: int | None = None
    with connect(shard, statement_timeout_ms=int(timeout_s * 1000) + 1000) as conn:
        row = conn.execute("SELECT statement_timestamp()").fetchone()  # after the fence committed
        assert row is not None
        since = row[0]
        grace_end = time.monotonic() + grace_s
        while True:
            older = [r[0] for r in conn.execute(OLDER_WRITERS_SQL, (since,))]
            if not older:
                return ended or 0
            if time.monotonic() > deadline:
                raise NotCaughtUp(f"{shard.name}: transactions that wrote before the freeze still run after "
                                  f"{timeout_s} s")
            if ended is None and time.monotonic() > grace_end:  # once: any left are ending
                for pid in older:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                ended = len(older)
            time.sleep(POLL_S)


def wait_until_applied(target: Admin, subscription: str, lsn: str, *, timeout_s: float, target_name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not applied_past(target, subscription, lsn):
        if time.monotonic() > deadline:
            raise NotCaughtUp(f"{target_name} had not applied {lsn} from {subscription} after {timeout_s} s")
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
        wait_until_applied(target, subscription, lsn, timeout_s=timeout_s, target_name=target.name)
        yield lsn
    finally:
        unfence(source, workflow, route.ranges)
