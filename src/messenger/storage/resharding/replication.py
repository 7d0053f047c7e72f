"""The copy of a route's rows by PostgreSQL's logical replication, and its fence on the target.

Per route (source → target): on the source a publication of every sharded table with a row
filter on the route's `ring_pos` ranges (`users` published as its root, so its partitions
need no publication of their own); on the target an `incoming` fence over the same ranges
(only replication writes there) and a subscription that copies the rows, then streams their
changes in commit order. Every step checks the catalogs first, so a resumed run repeats none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from messenger.storage.resharding.counts import Admin, connect, session
from messenger.storage.resharding.plan import Route
from messenger.storage.sharded_tables import SHARDED_TABLES
from messenger.topology import ShardConfig

CONTROL_TIMEOUT_MS = 30_000
FLUSH_WAIT_S = 10.0
"""How long a slot's advance waits for the WAL to be flushed past where it goes (the WAL
writer flushes every 200 ms by default)."""


class ReplicationStalled(Exception):
    """The WAL a step needs is not there in time."""


def ranges_filter(ranges: tuple[tuple[int, int], ...]) -> sql.Composable:
    """`ring_pos` inside any of the ranges, as a publication row filter accepts it (plain
    comparisons of a column with constants)."""
    terms = [
        sql.SQL("(ring_pos >= {} AND ring_pos < {})").format(sql.Literal(lo), sql.Literal(hi))
        for lo, hi in ranges
    ]
    return sql.SQL(" OR ").join(terms)


@dataclass(frozen=True, slots=True)
class RouteNames:
    """The objects one route owns, named after its workflow so a clean-up finds all of them."""

    workflow: str
    route: Route

    @property
    def copy(self) -> str:
        """Publication on the source, subscription and slot on the target."""
        return f"reshard_{self.workflow}_{self.route.source}_to_{self.route.target}"

    @property
    def back(self) -> str:
        """Reverse replication after the switch: publication on the target, subscription on
        the source. The copy name of the inverted route, so that switching the inverted plan
        (a rollback) takes the reverse replication for its forward one."""
        return f"reshard_{self.workflow}_{self.route.target}_to_{self.route.source}"


def create_publication(source: ShardConfig, name: str, ranges: tuple[tuple[int, int], ...]) -> None:
    where = ranges_filter(ranges)
    tables = sql.SQL(", ").join(
        sql.SQL("{} WHERE ({})").format(sql.Identifier(t.name), where) for t in SHARDED_TABLES
    )
    with connect(source, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone():
            return
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
                sql.Identifier(name), tables
            )
        )


def drop_publication(shard: ShardConfig, name: str) -> None:
    with connect(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))


def fence(shard: Admin, workflow: str, ranges: tuple[tuple[int, int], ...], state: str) -> None:
    """Put the ranges in `state` on the shard (insert or change), all in one transaction."""
    with session(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn, conn.transaction():
        for lo, hi in ranges:
            conn.execute(
                "INSERT INTO ring_fence (lo, hi, state, workflow) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (lo) DO UPDATE SET hi = excluded.hi, state = excluded.state, "
                "workflow = excluded.workflow, since = now()",
                (lo, hi, state, workflow),
            )


def unfence(shard: Admin, workflow: str, ranges: tuple[tuple[int, int], ...]) -> None:
    with session(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        conn.execute(
            "DELETE FROM ring_fence WHERE workflow = %s AND lo = ANY(%s)",
            (workflow, [lo for lo, _ in ranges]),
        )


def create_subscription(
    target: ShardConfig, source: ShardConfig, name: str, *, copy_data: bool, slot_exists: bool = False
) -> None:
    """Subscribe `target` to publication `name` on `source` (slot of the same name). With
    `slot_exists` the slot was made beforehand (`create_slot`) and the subscription is made
    disabled: it streams from where the slot is advanced to once `enable_subscription` runs."""
    with connect(target, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        if conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)).fetchone():
            return
        conn.execute(
            sql.SQL(
                "CREATE SUBSCRIPTION {name} CONNECTION {dsn} PUBLICATION {name} "
                "WITH (copy_data = {copy}, create_slot = {create}, enabled = {enabled}, slot_name = {slot})"
            ).format(
                name=sql.Identifier(name),
                dsn=sql.Literal(source.primary_dsn),
                copy=sql.Literal(copy_data),
                create=sql.Literal(not slot_exists),
                enabled=sql.Literal(not slot_exists),
                slot=sql.Literal(name),
            )
        )


def create_slot(publisher: ShardConfig, name: str) -> None:
    """A logical slot for a subscription made later. Making one waits for the transactions
    running on `publisher` to end (its consistent point), which is why it is made ahead."""
    with connect(publisher, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone():
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))


def drop_slot(publisher: ShardConfig, name: str) -> None:
    """A slot whose subscription was never made (a run stopped in between) would keep WAL."""
    with connect(publisher, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND NOT active", (name,)).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def advance_slot(publisher: ShardConfig, name: str, lsn: str, *, flush_wait_s: float = FLUSH_WAIT_S) -> None:
    """Move the slot's start to `lsn`: its subscription gets only what commits after it.

    PostgreSQL advances a slot no further than the WAL flushed to disk, so this waits for the
    flush to pass `lsn` first (the WAL writer's round, or any commit) and checks it got there.
    """
    with connect(publisher, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn < %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (lsn, name)
        ).fetchone()
        if not (row and row[0]):
            return
        deadline = time.monotonic() + flush_wait_s
        while not _flushed_past(conn, lsn):
            if time.monotonic() > deadline:
                raise ReplicationStalled(f"{publisher.name}'s WAL is not flushed past {lsn} after {flush_wait_s:.0f} s")
            time.sleep(0.01)
        conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (name, lsn))


def _flushed_past(conn: psycopg.Connection[tuple[Any, ...]], lsn: str) -> bool:
    row = conn.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
    return bool(row and row[0])


def subscription_enabled(shard: ShardConfig, name: str) -> bool | None:
    """Whether the subscription streams (None: there is none)."""
    with connect(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        row = conn.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s", (name,)).fetchone()
    return None if row is None else bool(row[0])


def enable_subscription(shard: ShardConfig, name: str) -> None:
    with connect(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(name)))


def drop_subscription(shard: ShardConfig, name: str) -> None:
    """Drop the subscription and its slot on the publisher (which must answer)."""
    with connect(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        if conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(name)))


@dataclass(frozen=True, slots=True)
class CopyState:
    tables: int
    ready: int
    """Tables whose initial copy is done and that now stream changes."""
    applied_lsn: str | None
    """The source position the subscription has applied up to (None before it started)."""

    @property
    def copied(self) -> bool:
        return self.tables > 0 and self.ready == self.tables


def copy_state(target: ShardConfig, name: str) -> CopyState:
    with connect(target, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        row = conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE r.srsubstate = 'r'),
                   (SELECT s.latest_end_lsn::text FROM pg_stat_subscription s
                    WHERE s.subname = %(name)s AND s.relid IS NULL)
            FROM pg_subscription_rel r JOIN pg_subscription p ON p.oid = r.srsubid
            WHERE p.subname = %(name)s
            """,
            {"name": name},
        ).fetchone()
    assert row is not None
    return CopyState(int(row[0]), int(row[1]), row[2])


def current_lsn(shard: Admin) -> str:
    """A mark in the shard's WAL past everything committed so far: the end of a logical
    message written (and flushed, so the walsender sends up to it) in a transaction of its own.

    Not `pg_current_wal_lsn()`: it can be the very end of the last commit, which the apply
    worker counts as received just before it applies that commit.
    """
    with session(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        row = conn.execute("SELECT pg_logical_emit_message(true, 'messenger.reshard', 'position')::text").fetchone()
    assert row is not None
    return str(row[0])


def wal_position(shard: Admin) -> str:
    """Where the shard's next WAL record goes: past every record inserted so far, whether
    written out or not (an apply worker's commits are asynchronous: they can sit in the WAL
    buffers, beyond `pg_current_wal_lsn()`, which is only what was written)."""
    with session(shard, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def applied_past(target: Admin, name: str, lsn: str) -> bool:
    """Whether the subscription has applied everything its source committed before `lsn`
    (a mark from `current_lsn`)."""
    with session(target, statement_timeout_ms=CONTROL_TIMEOUT_MS) as conn:
        # The apply worker handles the stream in order, and counts a message as received
        # before it applies it. Nothing the publication carries lies at or past the mark (the
        # message itself is not sent), so what takes it there was read after every change
        # before the mark had been applied and committed.
        row = conn.execute(
            "SELECT received_lsn >= %s::pg_lsn FROM pg_stat_subscription "
            "WHERE subname = %s AND relid IS NULL",
            (lsn, name),
        ).fetchone()
    return bool(row and row[0])


def is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError)
