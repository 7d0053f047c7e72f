"""Scratch databases beside the session cluster's, for tests that move schemas around."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg

from messenger.topology import Topology


def _with_dbname(dsn: str, dbname: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + dbname


@contextmanager
def scratch_topology(topology: Topology) -> Iterator[Topology]:
    """The same shards, each pointing at a new empty database on its primary (dropped after)."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    for shard in topology.shards:
        with psycopg.connect(_with_dbname(shard.primary_dsn, "postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    shards = tuple(
        replace(s, rw_dsn=_with_dbname(s.primary_dsn, name), ro_dsn=_with_dbname(s.primary_dsn, name),
                primary_dsn=_with_dbname(s.primary_dsn, name), replica_dsn=_with_dbname(s.primary_dsn, name))
        for s in topology.shards
    )
    try:
        yield replace(topology, shards=shards)
    finally:
        for shard in topology.shards:
            with psycopg.connect(_with_dbname(shard.primary_dsn, "postgres"), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
