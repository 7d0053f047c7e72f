"""The k-way merge of per-shard pages, with a fake router (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from messenger.storage.users import (
    LIST_USERS_ASC,
    LIST_USERS_ASC_AFTER,
    LIST_USERS_DESC_AFTER,
    UserStore,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def row(n: int) -> tuple[Any, ...]:
    return (uuid.UUID(int=n), f"F{n}", f"L{n}", NOW, NOW)


class FakeRouter:
    def __init__(self, shards: list[list[int]]) -> None:
        self.shards = shards
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def read_everywhere(
        self, sql: str, params: tuple[Any, ...], *, name: str
    ) -> list[list[tuple[Any, ...]]]:
        self.calls.append((sql, params))
        limit = params[-1]
        after = params[0].int if len(params) == 2 else None
        out = []
        for ids in self.shards:
            if "DESC" in sql:
                chosen = sorted((i for i in ids if after is None or i < after), reverse=True)
            else:
                chosen = sorted(i for i in ids if after is None or i > after)
            out.append([row(i) for i in chosen[:limit]])
        return out


async def test_first_page_merges_shards_in_id_order() -> None:
    router = FakeRouter([[1, 4, 7], [2, 5, 8], [3, 6, 9]])
    page = await UserStore(router).page(None, 4, "asc")  # type: ignore[arg-type]
    assert [u.id.int for u in page] == [1, 2, 3, 4]
    assert router.calls == [(LIST_USERS_ASC, (4,))]


async def test_next_page_starts_after_the_bound() -> None:
    router = FakeRouter([[1, 4, 7], [2, 5, 8], [3, 6, 9]])
    page = await UserStore(router).page(uuid.UUID(int=4), 3, "asc")  # type: ignore[arg-type]
    assert [u.id.int for u in page] == [5, 6, 7]
    assert router.calls[0][0] == LIST_USERS_ASC_AFTER


async def test_descending_pages_merge_in_reverse() -> None:
    router = FakeRouter([[1, 4, 7], [2, 5, 8], [3, 6, 9]])
    page = await UserStore(router).page(uuid.UUID(int=7), 4, "desc")  # type: ignore[arg-type]
    assert [u.id.int for u in page] == [6, 5, 4, 3]
    assert router.calls[0][0] == LIST_USERS_DESC_AFTER


async def test_uneven_shards_still_give_a_full_page() -> None:
    router = FakeRouter([[1, 2, 3, 4, 5, 6], [], [7]])
    page = await UserStore(router).page(None, 5, "asc")  # type: ignore[arg-type]
    assert [u.id.int for u in page] == [1, 2, 3, 4, 5]


def test_uuid_order_in_python_matches_postgres_byte_order() -> None:
    """PostgreSQL compares uuids as 16 unsigned bytes; uuid.UUID compares by int: the same."""
    a, b = uuid.UUID("7fffffff-0000-0000-0000-000000000000"), uuid.UUID("80000000-0000-0000-0000-000000000000")
    assert (a < b) == (a.bytes < b.bytes)


async def test_a_user_on_two_shards_mid_move_is_listed_once() -> None:
    router = FakeRouter([[1, 3, 5], [2, 3, 6], [4]])
    page = await UserStore(router).page(None, 5, "asc")  # type: ignore[arg-type]
    assert [u.id.int for u in page] == [1, 2, 3, 4, 5]
