"""The text a call sends: statement timeout, and for writes the commit and position."""

from __future__ import annotations

from messenger.storage.shards.statements import (
    PRIMARY_POSITION_SQL,
    REPLAY_POSITION_SQL,
    Statements,
)


def test_a_write_commits_and_reads_the_position_in_the_same_text() -> None:
    text = Statements(1200).write("INSERT INTO t VALUES (1) RETURNING 1")
    assert text == (
        "SET LOCAL statement_timeout = 1200; INSERT INTO t VALUES (1) RETURNING 1; "
        f"COMMIT; {PRIMARY_POSITION_SQL}"
    )


def test_a_checked_read_asks_for_the_replay_position_first() -> None:
    text = Statements(500).checked("SELECT 1")
    assert text == f"SET LOCAL statement_timeout = 500; {REPLAY_POSITION_SQL}; SELECT 1"


def test_each_text_is_built_once() -> None:
    statements = Statements(1200)
    sql = "SELECT " + "1"  # a fresh string object each run
    assert statements.read(sql) is statements.read(sql)
    assert statements.begin == "BEGIN; SET LOCAL statement_timeout = 1200"
