"""A shard that is not in the ring yet, as `shards add` creates one: a fresh database,
migrated to head, on shard 2's server of the session cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from uuid import UUID, uuid4

import psycopg

from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import migrate
from messenger.storage.shards.ring import ring_position
from messenger.topology import ShardConfig


@contextmanager
def spare_shard(cluster: LocalCluster, database: str, index: int = 3) -> Iterator[ShardConfig]:
    host = cluster.topology.shard(2)
    with psycopg.connect(host.primary_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    dsn = host.primary_dsn.rsplit("/", 1)[0] + f"/{database}"
    shard = ShardConfig(index, f"shard_{index}", dsn, dsn, dsn, dsn)
    try:
        assert all(o.ok for o in migrate(replace(cluster.topology, shards=(shard,))))
        yield shard
    finally:
        with psycopg.connect(host.primary_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def ids_in(ranges: tuple[tuple[int, int], ...], count: int) -> list[UUID]:
    """`count` random user ids whose ring positions fall in the ranges."""
    ids: list[UUID] = []
    while len(ids) < count:
        candidate = uuid4()
        if any(lo <= ring_position(str(candidate)) < hi for lo, hi in ranges):
            ids.append(candidate)
    return ids
