"""The freeze's wait for the writers that started before it: a transaction that stays open
(idle in it, as a relay batch waiting on a frozen write is) is ended after the grace period
instead of holding the freeze until it gives up."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from messenger.storage.resharding.freeze import wait_for_writers


def test_a_transaction_left_open_across_the_freeze_is_ended_after_the_grace(cluster: Any) -> None:
    shard = cluster.topology.shard(0)
    with psycopg.connect(shard.primary_dsn) as old:
        old.execute("SELECT txid_current()")  # holds a transaction id, like a writer
        started = time.monotonic()
        assert wait_for_writers(shard, timeout_s=3.0, grace_s=0.3) == 1
        assert 0.3 <= time.monotonic() - started < 2.0
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")


def test_without_old_transactions_the_freeze_ends_nobody(cluster: Any) -> None:
    shard = cluster.topology.shard(0)
    with psycopg.connect(shard.primary_dsn, autocommit=True) as idle:
        assert wait_for_writers(shard, timeout_s=3.0, grace_s=0.3) == 0
        assert idle.execute("SELECT 1").fetchone() == (1,)
