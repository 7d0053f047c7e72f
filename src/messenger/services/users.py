"""Use cases on users: create, read, replace, patch, delete, list.

Each takes plain values (already decoded by the API), applies the domain's rules and calls the
store; none knows about HTTP or SQL. Writes return a consistency token that a client may
send back on its reads (read-your-writes also holds without it, see storage/shards/router.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from messenger.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from messenger.domain.ids import new_id, parse_id
from messenger.domain.pages import check_page_limit
from messenger.domain.users import Order, User, clean_name
from messenger.services.cursor import CursorCodec
from messenger.services.sessions import Sessions
from messenger.storage.users import UserStore

DEFAULT_PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class Written:
    user: User
    token: str | None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[User]
    next_cursor: str | None


class UserService:
    """Access rules: a user with an account is changed or deleted only with its own access
    token. With `open_users` (dev profile, benchmarks) anyone may create profile-only users
    and change or delete those that have no account, as the seed's load scenarios do."""

    def __init__(
        self, users: UserStore, cursors: CursorCodec, *, open_users: bool = False,
        sessions: Sessions | None = None,
    ) -> None:
        self._users = users
        self._cursors = cursors
        self._open_users = open_users
        self._sessions = sessions

    async def authorize_change(self, user_id: uuid.UUID, caller: uuid.UUID | None) -> None:
        if caller == user_id:
            return
        if caller is not None:
            raise Forbidden("a user can only be changed with its own access token", details={"id": str(user_id)})
        if not self._open_users:
            raise Unauthenticated("changing a user needs its access token: Authorization: Bearer <token>")
        if await self._users.has_account(user_id):
            raise Unauthenticated("this user has an account: changing it needs its access token")

    async def create(self, first_name: str, last_name: str) -> Written:
        if not self._open_users:
            raise Forbidden(
                "open user creation is disabled here: register with POST /api/v1/accounts "
                "(or enable MESSENGER_OPEN_USERS)"
            )
        user, token = await self._users.add(
            new_id(), clean_name("first_name", first_name), clean_name("last_name", last_name)
        )
        return Written(user, token)

    async def get(self, user_id: uuid.UUID, *, token: str | None = None) -> User:
        user = await self._users.get(user_id, token=token)
        if user is None:
            raise _not_found(user_id)
        return user

    async def replace(
        self, user_id: uuid.UUID, first_name: str, last_name: str, *, caller: uuid.UUID | None = None
    ) -> Written:
        first_name, last_name = clean_name("first_name", first_name), clean_name("last_name", last_name)
        await self.authorize_change(user_id, caller)
        user, token = await self._users.replace(
            user_id, first_name, last_name
        )
        if user is None:
            raise _not_found(user_id)
        return Written(user, token)

    async def patch(
        self, user_id: uuid.UUID, first_name: str | None, last_name: str | None,
        *, caller: uuid.UUID | None = None,
    ) -> Written:
        if first_name is None and last_name is None:
            raise InvalidInput(
                "nothing to change: give first_name, last_name or both",
                details={"fields": ["first_name", "last_name"]},
            )
        first_name = None if first_name is None else clean_name("first_name", first_name)
        last_name = None if last_name is None else clean_name("last_name", last_name)
        await self.authorize_change(user_id, caller)
        user, token = await self._users.patch(user_id, first_name, last_name)
        if user is None:
            raise _not_found(user_id)
        return Written(user, token)

    async def delete(self, user_id: uuid.UUID, *, caller: uuid.UUID | None = None) -> str | None:
        await self.authorize_change(user_id, caller)
        deleted, token = await self._users.remove(user_id)
        if not deleted:
            raise _not_found(user_id)
        if self._sessions is not None:  # an account's tokens and sockets end with it
            await self._sessions.end_user(user_id)
        return token

    async def list(self, *, limit: int, order: Order, cursor: str | None) -> Page:
        """One page in id (= creation time, UUIDv7) order across all shards.

        The cursor carries the last id served and the order; one made for the other order,
        or tampered with, is refused.
        """
        check_page_limit(limit)
        after = None
        if cursor is not None:
            state = self._cursors.decode(cursor)
            if state.get("o") != order or not isinstance(state.get("a"), str):
                raise InvalidInput(
                    "cursor does not belong to this listing order", details={"field": "cursor"}
                )
            after = parse_id(str(state["a"]))
        items = await self._users.page(after, limit, order)
        next_cursor = (
            self._cursors.encode({"a": str(items[-1].id), "o": order})
            if len(items) == limit
            else None
        )
        return Page(items, next_cursor)


def _not_found(user_id: uuid.UUID) -> NotFound:
    return NotFound(f"user {user_id} not found", details={"id": str(user_id)})
