"""The consistent point waits for the transactions that may have passed the fence, and only
those: one that has written, not one that only holds row locks (the relay's claim)."""

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
