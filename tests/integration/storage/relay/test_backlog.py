"""The outbox backlog query (`/metrics`, cluster status) reads the outbox's partial indexes."""

from __future__ import annotations

import psycopg

from messenger.cluster.local import LocalCluster
from messenger.storage.relay.runner import BACKLOG


def _plan(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL enable_seqscan = off")  # a tiny test outbox would be scanned anyway
        rows = conn.execute("EXPLAIN " + BACKLOG).fetchall()
        conn.rollback()
    return "\n".join(row[0] for row in rows)


def test_the_backlog_query_counts_pending_rows_from_the_pending_index(cluster: LocalCluster) -> None:
    plan = _plan(cluster.topology.shards[0].primary_dsn)
    assert "outbox_pending" in plan
    assert "outbox_dead" in plan
    assert "Seq Scan" not in plan
