"""GET /api/v1/ops/cluster: the operator's snapshot of every shard, for the /cluster page.

Behind the ops credential (`require_ops_token`), like /metrics and /api/v1/shards/stats.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.api.auth import require_ops_token
from messenger.api.context import context
from messenger.api.responses import JSON, encode

PATH = "/api/v1/ops/cluster"


async def cluster_snapshot(request: Request) -> Response:
    require_ops_token(request)
    snapshot = await context(request).cluster.snapshot()
    return Response(encode(snapshot), 200, {"Cache-Control": "no-store"}, JSON)


routes = [Route(PATH, cluster_snapshot, methods=["GET"], name="ops_cluster")]
