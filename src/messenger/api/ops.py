"""Operational endpoints: liveness, readiness, per-shard stats, Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.domain.errors import ShardUnavailable
from messenger.metrics import Metrics
from messenger.storage.relay.runner import BACKLOG
from messenger.storage.shards.router import ShardRouter
from messenger.storage.users import COUNT_USERS

_encode = msgspec.json.Encoder().encode
_JSON = "application/json"


def _router(request: Request) -> ShardRouter:
    return request.app.state.router  # type: ignore[no-any-return]


async def health(_request: Request) -> Response:
    """Liveness: the process serves requests. Says nothing about the shards (see /ready)."""
    return Response(b'{"status":"ok"}', 200, None, _JSON)


async def ready(request: Request) -> Response:
    """Readiness: every shard's primary and replica answer now, and every shard's schema is
    at the version this server was started against. 503 with per-shard detail otherwise."""
    router = _router(request)
    expected = request.app.state.schema_version
    checks = await asyncio.gather(*(_check_shard(router, s, expected) for s in router.shard_indexes))
    redis_ok = await request.app.state.freshness.ping()
    ok = all(c["ready"] for c in checks)
    body = {
        "status": "ready" if ok else "not_ready",
        "schema_version": expected,
        "shards": checks,
        # Redis only makes reads cheaper (replica instead of primary); it is not required.
        "redis": {"up": redis_ok},
    }
    return Response(_encode(body), 200 if ok else 503, None, _JSON)


async def _check_shard(router: ShardRouter, shard: int, expected: str | None) -> dict[str, Any]:
    primary, replica = await asyncio.gather(
        router.schema_version(shard),
        router.ping(shard, "replica"),
        return_exceptions=True,
    )
    out: dict[str, Any] = {"shard": router.shard_name(shard), "index": shard}
    if isinstance(primary, BaseException):
        out["primary"] = {"up": False, "error": _describe(primary)}
        version = None
    else:
        version = primary
        out["primary"] = {"up": True}
    out["replica"] = (
        {"up": False, "error": _describe(replica)}
        if isinstance(replica, BaseException)
        else {"up": True}
    )
    out["schema_version"] = version
    schema_ok = version is not None and (expected is None or version == expected)
    out["schema_ok"] = schema_ok
    out["ready"] = out["primary"]["up"] and out["replica"]["up"] and schema_ok
    return out


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ShardUnavailable) else type(exc).__name__


async def shard_stats(request: Request) -> Response:
    """Per shard: users, their share of the total vs the ring's prediction, server health,
    replication lag and this worker's pool usage."""
    router = _router(request)
    predicted = router.ring.shares()

    async def count(shard: int) -> int | None:
        try:
            rows = await router.read(shard, COUNT_USERS, ())
        except ShardUnavailable:
            return None
        return int(rows[0][0])

    counts = await asyncio.gather(*(count(s) for s in router.shard_indexes))
    total = sum(c for c in counts if c is not None)
    shards = []
    for shard, users in zip(router.shard_indexes, counts, strict=True):
        state = router.state(shard)
        shards.append({
            "shard": router.shard_name(shard),
            "index": shard,
            "users": users,
            "share": (users / total) if users is not None and total else None,
            "ring_share": predicted.get(shard, 0.0),
            "primary_up": state.primary_up and not router.breaker_open(shard, "primary"),
            "replica_up": state.replica_up and not router.breaker_open(shard, "replica"),
            "replication_lag_seconds": state.lag_seconds,
            "replication_lag_bytes": state.lag_bytes,
            "pool": {role: router.pool_stats(shard, role) for role in ("primary", "replica")},
        })
    body = {"epoch": router.topology.epoch, "total_users": total, "shards": shards}
    return Response(_encode(body), 200, None, _JSON)


async def metrics(request: Request) -> Response:
    await _read_outbox_backlog(_router(request), request.app.state.metrics)
    return Response(
        request.app.state.metrics.render(), 200, None, "text/plain; version=0.0.4; charset=utf-8"
    )


async def _read_outbox_backlog(router: ShardRouter, metrics: Metrics) -> None:
    """Set the outbox gauges from every shard (replicas are fine: a scrape is not a write)."""
    results = await asyncio.gather(
        *(router.read(shard, BACKLOG, ()) for shard in router.shard_indexes), return_exceptions=True
    )
    for shard, result in zip(router.shard_indexes, results, strict=True):
        name = router.shard_name(shard)
        if isinstance(result, BaseException):
            if not isinstance(result, ShardUnavailable):
                raise result
            metrics.child(metrics.outbox_scrape_errors, name).inc()
            continue
        pending, age, dead = result[0]
        metrics.child(metrics.outbox_pending, name).set(pending)
        metrics.child(metrics.outbox_oldest_age, name).set(age)
        metrics.child(metrics.outbox_dead, name).set(dead)


routes = [
    Route("/health", health, methods=["GET"], name="health"),
    Route("/ready", ready, methods=["GET"], name="ready"),
    Route("/api/v1/shards/stats", shard_stats, methods=["GET"], name="shard_stats"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
]
