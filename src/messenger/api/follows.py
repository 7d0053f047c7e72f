"""HTTP routes of follows: /api/v1/users/{id}/follow, /following and /followers."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.api.auth import require_caller
from messenger.api.context import context
from messenger.api.errors import HttpError
from messenger.api.responses import JSON, encode
from messenger.api.schemas.follows import FollowEntryOut, FollowOut, FollowPageOut
from messenger.api.users import PREFIX, path_user_id
from messenger.services.follows import DEFAULT_PAGE_SIZE, Direction


async def follow_item(request: Request) -> Response:
    """PUT follows the user as the caller (201 the first time, 200 after); DELETE unfollows (204)."""
    follower = require_caller(request)
    followee = path_user_id(request)
    if request.method == "DELETE":
        await context(request).follows.unfollow(follower, followee)
        return Response(None, 204)
    follow = await context(request).follows.follow(follower, followee)
    body = FollowOut(follow.follower_id, follow.followee_id, follow.created_at)
    return Response(encode(body), 201 if follow.created else 200, None, JSON)


async def _list(request: Request, direction: Direction) -> Response:
    user_id: uuid.UUID = path_user_id(request)
    raw_limit = request.query_params.get("limit") or str(DEFAULT_PAGE_SIZE)
    try:
        limit = int(raw_limit)
    except ValueError:
        raise HttpError(422, "invalid_input", "limit must be an integer", {"field": "limit"}) from None
    page = await context(request).follows.page(
        direction, user_id, limit=limit, cursor=request.query_params.get("cursor") or None
    )
    items = [FollowEntryOut(e.user_id, e.first_name, e.last_name, e.followed_at) for e in page.items]
    return Response(encode(FollowPageOut(items, page.next_cursor)), 200, None, JSON)


async def following(request: Request) -> Response:
    return await _list(request, "following")


async def followers(request: Request) -> Response:
    return await _list(request, "followers")


routes = [
    Route(PREFIX + "/{user_id}/follow", follow_item, methods=["PUT", "DELETE"], name="follow"),
    Route(PREFIX + "/{user_id}/following", following, methods=["GET"], name="following"),
    Route(PREFIX + "/{user_id}/followers", followers, methods=["GET"], name="followers"),
]
