"""The registry of sharded tables against a migrated shard, and the fence every table carries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from messenger.cluster.local import LocalCluster
from messenger.storage.sharded_tables import (
    RING_POS_TABLES_SQL,
    SHARDED_TABLES,
    missing_from_registry,
)
from messenger.storage.shards.ring import ring_position


@pytest.fixture
def primary(cluster: LocalCluster) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(cluster.topology.shards[0].primary_dsn, autocommit=True) as conn:
        yield conn


def test_the_registry_lists_every_table_that_carries_ring_pos(primary: psycopg.Connection[tuple[object, ...]]) -> None:
    tables = [r[0] for r in primary.execute(RING_POS_TABLES_SQL)]
    assert "users" in tables and "outbox" in tables
    assert missing_from_registry(tables) == []
    assert sorted(t.name for t in SHARDED_TABLES) == sorted(tables)


def test_a_table_missing_from_the_registry_is_named() -> None:
    assert missing_from_registry(["users", "stickers"]) == ["stickers"]


def test_every_sharded_table_has_a_replica_identity_that_covers_ring_pos(
    primary: psycopg.Connection[tuple[object, ...]],
) -> None:
    rows = primary.execute("""
        SELECT c.relname, c.relreplident,
               EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
                         ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                       WHERE i.indrelid = c.oid AND i.indisreplident AND a.attname = 'ring_pos')
        FROM pg_class c
        WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
          AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'ring_pos')
    """).fetchall()
    assert len(rows) == len(SHARDED_TABLES) - 1 + 16  # users counts as its 16 partitions
    assert [r[0] for r in rows if r[1] != "i" or not r[2]] == []


def test_the_outbox_places_an_event_by_its_aggregate_key(primary: psycopg.Connection[tuple[object, ...]]) -> None:
    key = uuid.uuid4()
    row = primary.execute(
        "INSERT INTO outbox (id, aggregate, type, payload, delivered_at) "
        "VALUES (%s, %s, 'test', '{}', now()) RETURNING ring_pos",
        (uuid.uuid4(), f"conversation:{key}:to:2"),
    ).fetchone()
    assert row is not None and row[0] == ring_position(str(key))


def _fenced_insert(conn: psycopg.Connection[tuple[object, ...]], state: str) -> None:
    key = uuid.uuid4()
    position = ring_position(str(key))
    conn.execute(
        "INSERT INTO ring_fence (lo, hi, state, workflow) VALUES (%s, %s, %s, 'test')",
        (position, position + 1, state),
    )
    try:
        conn.execute(
            "INSERT INTO outbox (id, aggregate, type, payload, delivered_at) VALUES (%s, %s, 'test', '{}', now())",
            (uuid.uuid4(), f"user:{key}"),
        )
    finally:
        conn.execute("DELETE FROM ring_fence WHERE workflow = 'test'")


@pytest.mark.parametrize("state", ["moved", "incoming"])
def test_a_write_to_a_range_the_shard_does_not_own_is_refused_as_not_owned(
    primary: psycopg.Connection[tuple[object, ...]], state: str
) -> None:
    with pytest.raises(errors.DatabaseError) as refused:
        _fenced_insert(primary, state)
    assert refused.value.sqlstate == "MF001"
    assert "not owned by this shard" in str(refused.value)


def test_a_write_to_a_frozen_range_is_refused_as_frozen(primary: psycopg.Connection[tuple[object, ...]]) -> None:
    with pytest.raises(errors.DatabaseError) as refused:
        _fenced_insert(primary, "frozen")
    assert refused.value.sqlstate == "MF002"


def test_writes_outside_the_fenced_range_and_the_clean_up_bypass_pass(
    primary: psycopg.Connection[tuple[object, ...]],
) -> None:
    key = uuid.uuid4()
    position = ring_position(str(key))
    primary.execute("INSERT INTO ring_fence (lo, hi, state, workflow) VALUES (%s, %s, 'moved', 'test')",
                    (position + 1, position + 2))
    try:
        primary.execute(
            "INSERT INTO outbox (id, aggregate, type, payload, delivered_at) VALUES (%s, %s, 'test', '{}', now())",
            (uuid.uuid4(), f"user:{key}"),
        )
        primary.execute("UPDATE ring_fence SET lo = %s, hi = %s WHERE workflow = 'test'", (position, position + 1))
        with primary.transaction():
            primary.execute("SET LOCAL messenger.fence_bypass = 'on'")
            deleted = primary.execute("DELETE FROM outbox WHERE aggregate = %s", (f"user:{key}",)).rowcount
        assert deleted == 1
    finally:
        primary.execute("DELETE FROM ring_fence WHERE workflow = 'test'")


def test_a_row_filtered_publication_leaves_updates_and_deletes_working(
    primary: psycopg.Connection[tuple[object, ...]],
) -> None:
    tables = ", ".join(
        f"{t.name} WHERE (ring_pos >= 0 AND ring_pos < 100)" for t in SHARDED_TABLES
    )
    primary.execute(f"CREATE PUBLICATION test_filtered FOR TABLE {tables} WITH (publish_via_partition_root = true)")
    try:
        event = uuid.uuid4()
        primary.execute(
            "INSERT INTO outbox (id, aggregate, type, payload) VALUES (%s, %s, 'test', '{}')",
            (event, f"user:{uuid.uuid4()}"),
        )
        primary.execute("UPDATE outbox SET delivered_at = now() WHERE id = %s", (event,))
        primary.execute("UPDATE users SET first_name = first_name WHERE id = (SELECT id FROM users LIMIT 1)")
        primary.execute("DELETE FROM outbox WHERE id = %s", (event,))
    finally:
        primary.execute("DROP PUBLICATION test_filtered")


def test_ring_pos_is_filled_by_the_shard_from_the_key_and_cannot_be_set_by_a_writer(
    primary: psycopg.Connection[tuple[object, ...]],
) -> None:
    user = uuid.uuid4()
    try:
        row = primary.execute(
            "INSERT INTO users (id, first_name, last_name, ring_pos) VALUES (%s, 'Ring', 'Pos', 7) RETURNING ring_pos",
            (user,),
        ).fetchone()
        assert row == (ring_position(str(user)),)
        event = primary.execute(
            "INSERT INTO outbox (id, aggregate, type, payload) VALUES (%s, %s, 'test', '{}') RETURNING ring_pos",
            (uuid.uuid4(), f"conversation:{user}:to:1"),
        ).fetchone()
        assert event == (ring_position(str(user)),)
    finally:
        primary.execute("DELETE FROM outbox WHERE aggregate = %s", (f"conversation:{user}:to:1",))
        primary.execute("DELETE FROM users WHERE id = %s", (user,))


def test_ring_pos_is_a_plain_column_so_logical_replication_carries_it(
    primary: psycopg.Connection[tuple[object, ...]],
) -> None:
    generated = primary.execute(
        "SELECT count(*) FROM pg_attribute WHERE attname = 'ring_pos' AND attgenerated <> ''"
    ).fetchone()
    assert generated == (0,)
