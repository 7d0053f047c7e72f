"""Operational endpoints: liveness, readiness, per-shard stats, Prometheus metrics.

/health and /ready stay open (load balancers and orchestrators probe them, and they say no more
than up/down and a schema version); /api/v1/shards/stats and /metrics show the cluster's inner
figures and are behind the ops token (`require_ops_token`). Prometheus scrapes with
`authorization: {type: Bearer, credentials_file: <file holding MESSENGER_OPS_TOKEN>}`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.api.auth import require_ops_token
from messenger.api.context import context
from messenger.api.responses import JSON, encode
from messenger.services.ops import ServerCheck, ShardReadiness


async def health(_request: Request) -> Response:
    """Liveness: the process serves requests. Says nothing about the shards (see /ready)."""
    return Response(b'{"status":"ok"}', 200, None, JSON)


async def ready(request: Request) -> Response:
    """Readiness: every shard's primary and replica answer now, and every shard's schema is
    at the version this server was started against. 503 with per-shard detail otherwise."""
    readiness = await context(request).ops.readiness()
    body = {
        "status": "ready" if readiness.ready else "not_ready",
        "schema_version": readiness.schema_version,
        "shards": [_shard_readiness(s) for s in readiness.shards],
        "redis": {"up": readiness.redis_up},
    }
    return Response(encode(body), 200 if readiness.ready else 503, None, JSON)


def _shard_readiness(check: ShardReadiness) -> dict[str, Any]:
    return {
        "shard": check.shard,
        "index": check.index,
        "primary": _server(check.primary),
        "replica": _server(check.replica),
        "schema_version": check.schema_version,
        "schema_ok": check.schema_ok,
        "ready": check.ready,
    }


def _server(check: ServerCheck) -> dict[str, Any]:
    return {"up": True} if check.up else {"up": False, "error": check.error}


async def shard_stats(request: Request) -> Response:
    """Per shard: users, their share of the total vs the ring's prediction, server health,
    replication lag and this worker's pool usage."""
    require_ops_token(request)
    return Response(encode(await context(request).ops.cluster_stats()), 200, None, JSON)


async def metrics(request: Request) -> Response:
    require_ops_token(request)  # before the refresh: a refused scrape costs the shards nothing
    ctx = context(request)
    await ctx.ops.refresh_outbox_gauges()
    return Response(ctx.metrics.render(), 200, None, "text/plain; version=0.0.4; charset=utf-8")


routes = [
    Route("/health", health, methods=["GET"], name="health"),
    Route("/ready", ready, methods=["GET"], name="ready"),
    Route("/api/v1/shards/stats", shard_stats, methods=["GET"], name="shard_stats"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
]
