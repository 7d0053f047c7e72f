"""Use cases on follows: follow, unfollow, list whom a user follows and who follows them.

The followee's existence is checked on its own shard (an application-level foreign key),
then the edge is written on the follower's shard; the relay brings the followee's end in line
(storage/relay/follows.py), and also undoes a follow that raced the followee's deletion.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from messenger.domain.errors import InvalidInput, NotFound, Unauthenticated
from messenger.domain.follows import Follow, FollowEntry, check_not_self
from messenger.domain.ids import parse_id
from messenger.domain.pages import check_page_limit
from messenger.services.cursor import CursorCodec
from messenger.storage.follows import FollowStore

DEFAULT_PAGE_SIZE = 20

Direction = Literal["following", "followers"]


@dataclass(frozen=True, slots=True)
class FollowPage:
    items: list[FollowEntry]
    next_cursor: str | None


class FollowService:
    def __init__(self, follows: FollowStore, cursors: CursorCodec) -> None:
        self._follows = follows
        self._cursors = cursors

    async def follow(self, follower_id: uuid.UUID, followee_id: uuid.UUID) -> Follow:
        """Follow `followee_id` as `follower_id`; following again changes nothing."""
        check_not_self(follower_id, followee_id)
        names = await self._follows.names(followee_id)
        if names is None:
            raise NotFound(f"user {followee_id} not found", details={"id": str(followee_id)})
        follow = await self._follows.follow(follower_id, followee_id, names)
        if follow is None:
            raise Unauthenticated("the user of this token no longer exists")
        return follow

    async def unfollow(self, follower_id: uuid.UUID, followee_id: uuid.UUID) -> bool:
        """Stop following; True if there was a follow. Needs no followee: it may be gone."""
        check_not_self(follower_id, followee_id)
        return await self._follows.unfollow(follower_id, followee_id)

    async def page(
        self, direction: Direction, user_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> FollowPage:
        """One page of a follow list, newest first; the cursor is bound to list and user."""
        check_page_limit(limit)
        after = None
        if cursor is not None:
            state = self._cursors.decode(cursor)
            if state.get("l") != direction or state.get("u") != str(user_id) or not isinstance(state.get("a"), str):
                raise InvalidInput("cursor does not belong to this list", details={"field": "cursor"})
            after = parse_id(str(state["a"]))
        fetch = self._follows.following if direction == "following" else self._follows.followers
        items = await fetch(user_id, after, limit)
        if items is None:
            raise NotFound(f"user {user_id} not found", details={"id": str(user_id)})
        next_cursor = (
            self._cursors.encode({"l": direction, "u": str(user_id), "a": str(items[-1].follow_id)})
            if len(items) == limit
            else None
        )
        return FollowPage(items, next_cursor)
