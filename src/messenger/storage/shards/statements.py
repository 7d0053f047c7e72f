"""The text one call sends to a server, built once per statement and kept.

Every call is one round trip in the simple query protocol (pools.py), so one text can carry
`SET LOCAL statement_timeout` (the server-side deadline) with the statement, and for a write
the COMMIT of the implicit transaction and the WAL position after it. The wrapped texts are
cached: the hot path asks for the same few statements again and again.
"""

from __future__ import annotations

from typing import Literal

PRIMARY_POSITION_SQL = "SELECT pg_current_wal_lsn()::text"
COMMIT_WITH_POSITION_SQL = f"COMMIT; {PRIMARY_POSITION_SQL}"
"""Ends a multi-statement transaction and reads the position after its commit record."""
REPLICA_POSITION_SQL = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
REPLAY_POSITION_SQL = "SELECT pg_last_wal_replay_lsn()::text"
SCHEMA_VERSION_SQL = "SELECT version_num FROM alembic_version"

Kind = Literal["read", "checked", "write"]


class Statements:
    """`read`: the statement under the statement timeout. `checked`: the replica's replay
    position first, then the statement (read-your-writes in the same round trip). `write`:
    the statement, COMMIT, then the primary's WAL position, which is therefore at or after
    the commit record."""

    __slots__ = ("_cache", "_prefix", "begin")

    def __init__(self, statement_timeout_ms: int) -> None:
        ms = int(statement_timeout_ms)
        self._prefix = f"SET LOCAL statement_timeout = {ms}; "
        self.begin = f"BEGIN; SET LOCAL statement_timeout = {ms}"
        """What opens a multi-statement transaction."""
        self._cache: dict[tuple[Kind, str], str] = {}

    def read(self, sql: str) -> str:
        return self._wrapped("read", sql)

    def checked(self, sql: str) -> str:
        return self._wrapped("checked", sql)

    def write(self, sql: str) -> str:
        return self._wrapped("write", sql)

    def _wrapped(self, kind: Kind, sql: str) -> str:
        wrapped = self._cache.get((kind, sql))
        if wrapped is None:
            if kind == "write":
                wrapped = f"{self._prefix}{sql}; COMMIT; {PRIMARY_POSITION_SQL}"
            elif kind == "checked":
                wrapped = f"{self._prefix}{REPLAY_POSITION_SQL}; {sql}"
            else:
                wrapped = f"{self._prefix}{sql}"
            self._cache[(kind, sql)] = wrapped
        return wrapped
