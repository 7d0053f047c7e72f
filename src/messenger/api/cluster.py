"""GET /api/v1/ops/cluster: the operator's snapshot of every shard, for the /cluster page.

Behind the ops credential: `Authorization: Bearer <MESSENGER_OPS_TOKEN>`. With no token
configured the endpoint refuses every credential (403) rather than being open; no credential is 401.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger.api.auth import bearer_token
from messenger.api.context import context
from messenger.api.responses import JSON, encode
from messenger.domain.errors import Forbidden, Unauthenticated

PATH = "/api/v1/ops/cluster"


def require_ops_token(request: Request) -> None:
    # No credential is 401 whatever the configuration (the same answer as every bearer route);
    # a credential where none can be valid is 403.
    given = bearer_token(request)
    if given is None:
        raise Unauthenticated("this needs the ops token: Authorization: Bearer <ops token>")
    expected = context(request).settings.ops_token
    if not expected:
        raise Forbidden("operator endpoints are off: set MESSENGER_OPS_TOKEN to enable them")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthenticated("the ops token is not valid")


async def cluster_snapshot(request: Request) -> Response:
    require_ops_token(request)
    snapshot = await context(request).cluster.snapshot()
    return Response(encode(snapshot), 200, {"Cache-Control": "no-store"}, JSON)


routes = [Route(PATH, cluster_snapshot, methods=["GET"], name="ops_cluster")]
