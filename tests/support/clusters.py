"""Small clusters of a test module's own, for tests that stop servers or change the ring: the
session cluster stays as every other test expects it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import migrate
from tests.support.ports import free_base_port


@contextmanager
def private_cluster(shards: int, *, room_for: int = 2) -> Iterator[LocalCluster]:
    """A migrated cluster of `shards` shards, with free ports for `room_for` in all."""
    root = Path(tempfile.mkdtemp(prefix="messenger-private-"))
    private = root / "private"
    private.mkdir(mode=0o700)
    local = LocalCluster(private / "cluster", shards=shards, base_port=free_base_port(room_for))
    try:
        local.up()
        assert all(o.ok for o in migrate(local.topology))
        yield local
    finally:
        local.destroy()
        shutil.rmtree(root, ignore_errors=True)


def insert_users(dsn: str, count: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO users (id, first_name, last_name)"
            " SELECT gen_random_uuid(), 'Moving', 'Row' FROM generate_series(1, %s)",
            (count,),
        )


def user_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM users")}
