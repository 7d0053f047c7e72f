"""The consistent point waits for the transactions that may have passed the fence, and only
those: one that is writing or has written, not one that only holds row locks (the relay's
claim); one left open across the freeze (idle in it, as a relay batch waiting on a frozen
write is) is ended after the grace period instead of holding the freeze until it gives up."""

from __future__ import annotations

import threading
import time
from uuid import uuid4

import psycopg
import pytest

from messenger.storage.resharding.freeze import NotCaughtUp, wait_for_writers


def _a_user(dsn: str) -> str:
    user = str(uuid4())
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Freeze', 'Test')", (user,))
    return user


def test_a_transaction_holding_only_row_locks_does_not_hold_the_freeze_back(cluster) -> None:
    shard = cluster.topology.shard(0)
    user = _a_user(shard.primary_dsn)
    with psycopg.connect(shard.primary_dsn) as claim:
        claim.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user,))  # an xid, no write
        _a_user(shard.primary_dsn)  # traffic goes on: later transactions commit past the claim
        started = time.monotonic()
        wait_for_writers(shard, timeout_s=1.0)
        assert time.monotonic() - started < 0.5
        claim.rollback()


def test_a_transaction_that_has_written_is_waited_for_until_it_ends(cluster) -> None:
    shard = cluster.topology.shard(0)
    user = _a_user(shard.primary_dsn)
    with psycopg.connect(shard.primary_dsn) as writer:
        # The newest transaction of the shard: its xid is not below the snapshot's xmax, which
        # is where a check of the snapshot's horizon (xmin >= xmax) missed it.
        writer.execute("UPDATE users SET last_name = 'Written' WHERE id = %s", (user,))
        with pytest.raises(NotCaughtUp):
            wait_for_writers(shard, timeout_s=0.3)
        committer = threading.Timer(0.3, writer.commit)
        started = time.monotonic()
        committer.start()
        wait_for_writers(shard, timeout_s=3.0)
        assert time.monotonic() - started >= 0.25
        committer.join()


def test_a_transaction_left_open_across_the_freeze_is_ended_after_the_grace(cluster) -> None:
    shard = cluster.topology.shard(0)
    with psycopg.connect(shard.primary_dsn) as old:
        old.execute("UPDATE users SET last_name = last_name WHERE false")  # a writer, as far as locks tell
        started = time.monotonic()
        assert wait_for_writers(shard, timeout_s=3.0, grace_s=0.3) == 1
        assert 0.3 <= time.monotonic() - started < 2.0
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")


def test_without_old_transactions_the_freeze_ends_nobody(cluster) -> None:
    shard = cluster.topology.shard(0)
    with psycopg.connect(shard.primary_dsn, autocommit=True) as idle:
        assert wait_for_writers(shard, timeout_s=3.0, grace_s=0.3) == 0
        assert idle.execute("SELECT 1").fetchone() == (1,)
