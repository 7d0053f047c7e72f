"""A stand-in for psycopg_pool's AsyncConnectionPool: each statement's answer comes from a
function of the test, so the machinery around it (permits, breakers, deadlines) runs for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

Rows = list[tuple[Any, ...]]
Answer = Callable[[str, Any], Awaitable[list[Rows]]]


async def one_row(sql: str, params: Any) -> list[Rows]:
    return [[(1,)]]


class FakeCursor:
    def __init__(self, pool: FakePool) -> None:
        self._pool = pool
        self._sets: list[Rows] = []
        self._current: Rows = []
        self.description: list[tuple[str]] | None = None

    async def execute(self, sql: str, params: Any) -> None:
        self._pool.executed.append((sql, params))
        self._sets = list(await self._pool.answer(sql, params))
        self.nextset()

    async def fetchall(self) -> Rows:
        return self._current

    def nextset(self) -> bool | None:
        if not self._sets:
            self.description = None
            return None
        self._current = self._sets.pop(0)
        self.description = [("column",)]
        return True


class FakeConnection:
    broken = False
    closed = False

    def __init__(self, pool: FakePool) -> None:
        self._pool = pool

    def cursor(self) -> FakeCursor:
        return FakeCursor(self._pool)

    async def execute(self, sql: str, params: Any = None) -> FakeCursor:
        cursor = FakeCursor(self._pool)
        await cursor.execute(sql, params)
        return cursor

    async def commit(self) -> None:
        await self.execute("COMMIT")

    async def rollback(self) -> None:
        await self.execute("ROLLBACK")

    async def close(self) -> None:
        self.closed = True


class FakePool:
    def __init__(self, max_size: int = 2, answer: Answer = one_row) -> None:
        self.max_size = max_size
        self.answer = answer
        self.executed: list[tuple[str, Any]] = []
        self.checks = 0
        self.returned: list[FakeConnection] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection(self)

    async def getconn(self) -> FakeConnection:
        return FakeConnection(self)

    async def putconn(self, conn: FakeConnection) -> None:
        self.returned.append(conn)

    async def check(self) -> None:
        self.checks += 1

    def get_stats(self) -> dict[str, int]:
        return {"pool_size": 1, "pool_available": 1}


class FakeShardPools:
    """ShardPools' `get`: one FakePool per (shard, role), made on first use."""

    def __init__(self, answer: Answer = one_row, max_size: int = 2) -> None:
        self._answer = answer
        self._max_size = max_size
        self.pools: dict[tuple[int, str], FakePool] = {}

    def get(self, shard: int, role: str) -> FakePool:
        pool = self.pools.get((shard, role))
        if pool is None:
            pool = self.pools[(shard, role)] = FakePool(self._max_size, self._answer)
        return pool

    def add(self, shard: Any) -> list[FakePool]:
        replaced = self.remove(shard.index)
        for role in ("primary", "replica"):
            self.pools[(shard.index, role)] = FakePool(self._max_size, self._answer)
        return replaced

    def remove(self, shard: int) -> list[FakePool]:
        return [p for role in ("primary", "replica") if (p := self.pools.pop((shard, role), None)) is not None]

    async def open_shard(self, shard: int) -> None:
        pass
