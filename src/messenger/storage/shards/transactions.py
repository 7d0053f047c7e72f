"""What background work and multi-statement use cases need of the storage layer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from psycopg import AsyncConnection, AsyncCursor

Key = uuid.UUID | str
"""A placement key: a UUID, or canonical key text (lowercase UUID text, a lowercase claim value)."""

UNNAMED = "unnamed"
"""The name of a shard-first call that gives none (callers not named yet): still one bounded label."""


def canonical_key(key: Key) -> str:
    """The text the ring hashes and freshness markers are stored under (`str(uuid)` is lowercase)."""
    return key if isinstance(key, str) else str(key)


class ShardTransactions(Protocol):
    """Transactions on shard primaries, and where keys live: what the relay, its handlers and
    multi-statement use cases (registration, deletion) need of the storage layer."""

    @property
    def shard_indexes(self) -> tuple[int, ...]: ...

    def shard_name(self, shard: int) -> str: ...

    def shard_for(self, key: Key) -> int: ...

    def transaction_for(
        self, key: Key, *, name: str, marks: Sequence[Key] = ()
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """`transaction` on the shard that holds `key`."""
        ...

    def transaction(
        self, shard: int, *, name: str = UNNAMED, marks: Sequence[Key] = ()
    ) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A transaction on the shard's primary, with a statement timeout; commits on exit.

        `name` says which transaction it is in metrics and logs. `marks`: keys the transaction
        writes, so that reads of them right after see the write (read-your-writes); an
        implementation without replicas may ignore them.
        """
        ...


class _LastStatement:
    """The statement a transaction body left to be sent with its COMMIT (`finish_with`), and
    the results of the first one, sent with its BEGIN (`opening`)."""

    __slots__ = ("conn", "opened", "params", "sql")

    def __init__(self, conn: AsyncConnection[Any], opened: AsyncCursor[Any] | None) -> None:
        self.conn = conn
        self.opened = opened
        self.sql: str | None = None
        self.params: Mapping[str, Any] | Sequence[Any] = ()


_last_statement: ContextVar[_LastStatement | None] = ContextVar("last_statement", default=None)


@contextmanager
def deferring_last_statement(
    conn: AsyncConnection[Any], opened: AsyncCursor[Any] | None = None
) -> Iterator[_LastStatement]:
    """While a transaction's body runs: `finish_with(conn, …)` leaves its statement here, for
    the transaction to send in one text with its COMMIT."""
    pending = _LastStatement(conn, opened)
    token = _last_statement.set(pending)
    try:
        yield pending
    finally:
        _last_statement.reset(token)


async def finish_with(conn: AsyncConnection[Any], sql: str, params: Mapping[str, Any] | Sequence[Any]) -> None:
    """The last statement of the transaction on `conn` (no rows wanted back): sent together
    with the COMMIT, one round trip fewer, where the transaction supports it (the shard
    router's); anywhere else it runs now. Nothing may run on `conn` after it."""
    pending = _last_statement.get()
    if pending is None or pending.conn is not conn:
        await conn.execute(sql, params)
        return
    if pending.sql is not None:
        raise RuntimeError("a transaction has one last statement")
    pending.sql, pending.params = sql, params


def opening(conn: AsyncConnection[Any]) -> AsyncCursor[Any]:
    """The results of the `first` statement the transaction on `conn` was opened with."""
    pending = _last_statement.get()
    if pending is None or pending.conn is not conn or pending.opened is None:
        raise RuntimeError("this transaction was not opened with a first statement")
    return pending.opened
