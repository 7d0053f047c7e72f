"""GET /api/v1/ops/cluster: the operator's snapshot of every shard, for the /cluster page.

Behind the ops credential: `Authorization: Bearer <MESSENGER_OPS_TOKEN>`. With no token
configured the endpoint refuses everyone (403) rather than being open.
"""

from __future__ import annotations

import hmac

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.api.auth import bearer_token
from messenger.domain.errors import Forbidden, Unauthenticated
from messenger.services.cluster import ClusterOverview

PATH = "/api/v1/ops/cluster"
_encode = msgspec.json.Encoder().encode


def require_ops_token(request: Request) -> None:
    expected: str = request.app.state.settings.ops_token
    if not expected:
        raise Forbidden("operator endpoints are off: set MESSENGER_OPS_TOKEN to enable them")
    given = bearer_token(request)
    if given is None:
        raise Unauthenticated("this needs the ops token: Authorization: Bearer <ops token>")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthenticated("the ops token is not valid")


def _overview(request: Request) -> ClusterOverview:
    # Built on first use from the worker's router, so the composition root needs no change.
    state = request.app.state
    overview: ClusterOverview | None = getattr(state, "cluster_overview", None)
    if overview is None:
        overview = state.cluster_overview = ClusterOverview(state.router)
    return overview


async def cluster_snapshot(request: Request) -> Response:
    require_ops_token(request)
    snapshot = await _overview(request).snapshot()
    return Response(_encode(snapshot), 200, {"Cache-Control": "no-store"}, "application/json")


routes = [Route(PATH, cluster_snapshot, methods=["GET"], name="ops_cluster")]
