"""The ASGI application: routes, error mapping and request metrics.

What the routes serve with (services, hub, token signer, settings) comes in as one `ApiContext`
from the lifespan the caller passes: `messenger.bootstrap` builds it, and owns every connection
of the worker process. This module opens none.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger.api import accounts, cluster, conversations, follows, ops, pages, users, ws
from messenger.api.auth import SessionCheck
from messenger.api.context import ApiContext
from messenger.api.errors import EXCEPTION_HANDLERS
from messenger.api.openapi import openapi_routes
from messenger.metrics import Metrics

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts requests by route template (not raw path: ids would explode the label set),
    method and status, and observes their latency. Raw ASGI to stay off the hot path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            record_request(self.metrics, getattr(route, "path", "unmatched"), scope["method"], status, started)


def record_request(metrics: Metrics, template: str, method: str, status: int, started: float) -> None:
    if method not in _KNOWN_METHODS:  # clients choose methods: keep the label set bounded
        method = "OTHER"
    metrics.child(metrics.requests, template, method, str(status)).inc()
    metrics.child(metrics.request_seconds, template, method).observe(time.perf_counter() - started)


class MessengerApp(Starlette):
    """The Starlette app, with `GET /api/v1/users/{id}` without a bearer token served in front
    of its middleware stack (users.fast_user_body): the GET by id is the hot read, and
    Starlette's layers (error middleware, routing, Request, Response, the wrappers of `send`)
    cost more CPU than the rest of it (docs/performance.md). What those layers would do for it
    is done here: the same error mapping (also of the unexpected: a 500 in the JSON shape),
    and the request metrics under the route's template. A request with `Authorization` goes
    the whole way, so SessionCheck refuses an ended session on this route too."""

    def __init__(self, *, metrics: Metrics, **starlette: Any) -> None:
        super().__init__(**starlette)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        id_text = users.fast_get_user_id(scope) if scope["type"] == "http" else None
        if id_text is None:
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            body = await users.fast_user_body(self.state.context, scope, id_text)
        except Exception as exc:
            scope["app"] = self
            response = await _error_response(Request(scope), exc)
            try:
                await response(scope, receive, send)
            finally:
                record_request(self.metrics, users.ITEM_PATH, "GET", response.status_code, started)
            return
        try:  # outside the mapping: a failed send is no error to answer with a second response
            await users.send_json(send, body)
        finally:
            record_request(self.metrics, users.ITEM_PATH, "GET", 200, started)


async def _error_response(request: Request, exc: Exception) -> Response:
    """The response any route's error gets: the first of EXCEPTION_HANDLERS whose type it is
    (their last entry, Exception, takes the unexpected)."""
    handler = next(h for kind, h in EXCEPTION_HANDLERS.items() if isinstance(exc, kind))
    return await handler(request, exc)


OpenContext = Callable[[Starlette], AbstractAsyncContextManager[ApiContext]]
"""Opens what the app serves with when it starts and closes it when it stops (its lifespan)."""


def build_app(open_context: OpenContext, metrics: Metrics) -> MessengerApp:
    """The Starlette app: every route, the error mapping, request metrics into `metrics`."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_context(app) as context:
            app.state.context = context  # read back by api.context.context(request)
            yield

    app = MessengerApp(
        routes=[*users.routes, *follows.routes, *accounts.routes, *conversations.routes,
                *ws.routes, *ops.routes, *openapi_routes(), *cluster.routes, *pages.routes],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        metrics=metrics,
    )
    app.router.redirect_slashes = False
    app.add_middleware(SessionCheck)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
