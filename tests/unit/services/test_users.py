"""UserService rules with a fake repository (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from messenger.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from messenger.domain.keys import KeySet
from messenger.domain.pages import MAX_PAGE_SIZE
from messenger.domain.users import User
from messenger.services.cursor import CursorCodec
from messenger.services.users import UserService

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeUsers:
    def __init__(self) -> None:
        self.with_accounts: set[uuid.UUID] = set()
        self.rows: dict[uuid.UUID, User] = {}
        self.pages: list[tuple[Any, ...]] = []

    async def add(self, user_id: uuid.UUID, first: str, last: str) -> tuple[User, str]:
        self.rows[user_id] = User(user_id, first, last, NOW, NOW)
        return self.rows[user_id], "1.0.1"

    async def get(self, user_id: uuid.UUID, *, token: str | None = None) -> User | None:
        return self.rows.get(user_id)

    async def patch(self, user_id: uuid.UUID, first: str | None, last: str | None) -> tuple[User | None, str | None]:
        old = self.rows.get(user_id)
        if old is None:
            return None, None
        self.rows[user_id] = User(user_id, first or old.first_name, last or old.last_name, NOW, NOW)
        return self.rows[user_id], "1.0.2"

    async def has_account(self, user_id: uuid.UUID) -> bool:
        return user_id in self.with_accounts

    async def remove(self, user_id: uuid.UUID) -> tuple[bool, str | None]:
        return self.rows.pop(user_id, None) is not None, None

    async def page(self, after: uuid.UUID | None, limit: int, order: str) -> list[User]:
        self.pages.append((after, limit, order))
        ids = sorted(self.rows, reverse=order == "desc")
        if after is not None:
            ids = [i for i in ids if (i > after if order == "asc" else i < after)]
        return [self.rows[i] for i in ids[:limit]]


@pytest.fixture
def users() -> FakeUsers:
    return FakeUsers()


@pytest.fixture
def service(users: FakeUsers) -> UserService:
    return UserService(users, CursorCodec(KeySet.single(b"k" * 32)), open_users=True)  # type: ignore[arg-type]


async def test_create_cleans_names_before_storing(service: UserService, users: FakeUsers) -> None:
    written = await service.create(" Ada ", "Lovelace ")
    assert users.rows[written.user.id].first_name == "Ada"
    assert written.user.id.version == 7


async def test_create_with_a_bad_name_stores_nothing(service: UserService, users: FakeUsers) -> None:
    with pytest.raises(InvalidInput):
        await service.create("Ada", " ")
    assert users.rows == {}


async def test_get_missing_is_not_found(service: UserService) -> None:
    with pytest.raises(NotFound):
        await service.get(uuid.uuid4())


async def test_patch_needs_a_field(service: UserService) -> None:
    written = await service.create("A", "B")
    with pytest.raises(InvalidInput):
        await service.patch(written.user.id, None, None)


async def test_list_pages_with_cursors_until_the_end(service: UserService) -> None:
    for i in range(5):
        await service.create(f"U{i}", "X")
    first = await service.list(limit=2, order="asc", cursor=None)
    second = await service.list(limit=2, order="asc", cursor=first.next_cursor)
    third = await service.list(limit=2, order="asc", cursor=second.next_cursor)
    ids = [u.id for u in first.items + second.items + third.items]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert third.next_cursor is None


@pytest.mark.parametrize("limit", [0, MAX_PAGE_SIZE + 1])
async def test_list_refuses_limits_out_of_range(service: UserService, limit: int) -> None:
    with pytest.raises(InvalidInput) as error:
        await service.list(limit=limit, order="asc", cursor=None)
    assert error.value.details["field"] == "limit"


async def test_list_refuses_a_cursor_of_the_other_order(service: UserService) -> None:
    for i in range(3):
        await service.create(f"U{i}", "X")
    page = await service.list(limit=1, order="asc", cursor=None)
    with pytest.raises(InvalidInput):
        await service.list(limit=1, order="desc", cursor=page.next_cursor)


async def test_list_refuses_a_cursor_signed_with_another_secret(users: FakeUsers) -> None:
    ours = UserService(users, CursorCodec(KeySet.single(b"a" * 32)), open_users=True)  # type: ignore[arg-type]
    theirs = UserService(users, CursorCodec(KeySet.single(b"b" * 32)), open_users=True)  # type: ignore[arg-type]
    for i in range(3):
        await ours.create(f"U{i}", "X")
    page = await theirs.list(limit=1, order="asc", cursor=None)
    with pytest.raises(InvalidInput):
        await ours.list(limit=1, order="asc", cursor=page.next_cursor)


async def test_open_creation_is_refused_unless_enabled(users: FakeUsers) -> None:
    closed = UserService(users, CursorCodec(KeySet.single(b"k" * 32)))  # type: ignore[arg-type]
    with pytest.raises(Forbidden, match="POST /api/v1/accounts"):
        await closed.create("Ada", "Lovelace")


async def test_a_user_with_an_account_changes_only_with_its_own_token(service: UserService, users: FakeUsers) -> None:
    created = await service.create("Ada", "Lovelace")
    user_id = created.user.id
    users.with_accounts.add(user_id)
    with pytest.raises(Unauthenticated):
        await service.patch(user_id, "Grace", None)
    with pytest.raises(Forbidden):
        await service.patch(user_id, "Grace", None, caller=uuid.uuid4())
    assert (await service.patch(user_id, "Grace", None, caller=user_id)).user.first_name == "Grace"


async def test_a_profile_only_user_changes_without_a_token_only_when_open(users: FakeUsers) -> None:
    open_service = UserService(users, CursorCodec(KeySet.single(b"k" * 32)), open_users=True)  # type: ignore[arg-type]
    user_id = (await open_service.create("Ada", "Lovelace")).user.id
    await open_service.patch(user_id, "Grace", "Hopper")
    closed = UserService(users, CursorCodec(KeySet.single(b"k" * 32)))  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        await closed.delete(user_id)
    await open_service.delete(user_id)
