"""The resharding workflow's latest state, as the operator's page shows it: the workflow
announces a summary (no DSNs) on every save; API workers read it with their snapshot. Redis,
not the state file, because the workflow and the API need not share a disk."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

KEY = "messenger:reshard:latest"
KEEP_S = 7 * 24 * 3600
"""A finished workflow stays on the page for a week."""


async def announce(redis: Redis, summary: dict[str, Any]) -> None:
    await redis.set(KEY, json.dumps(summary), ex=KEEP_S)


async def latest(redis: Redis) -> dict[str, Any] | None:
    """The last workflow's summary, or None when there is none or Redis does not answer."""
    try:
        raw = await redis.get(KEY)
    except (RedisError, OSError):
        return None
    if raw is None:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None
