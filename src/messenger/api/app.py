"""The ASGI application: routes, error mapping and request metrics.

What the routes serve with (services, hub, token signer, settings) comes in as one `ApiContext`
from the lifespan the caller passes: `messenger.bootstrap` builds it, and owns every connection
of the worker process. This module opens none.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger.api import accounts, cluster, conversations, follows, ops, pages, users, ws
from messenger.api.auth import SessionCheck
from messenger.api.context import ApiContext
from messenger.api.errors import (
    EXCEPTION_HANDLERS,
    HttpError,
    handle_http_error,
    handle_messenger_error,
)
from messenger.api.openapi import openapi_routes
from messenger.domain.errors import MessengerError
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
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            if method not in _KNOWN_METHODS:  # clients choose methods: keep the label set bounded
                method = "OTHER"
            metrics = self.metrics
            metrics.child(metrics.requests, template, method, str(status)).inc()
            metrics.child(metrics.request_seconds, template, method).observe(
                time.perf_counter() - started
            )


class UserReadFastPath:
    """Serves `GET /api/v1/users/{id}` without Starlette's routing and request wrappers
    (users.fast_get_user); every other request goes on to the app. Errors get the same
    mapping as on any route, and the route is set on the scope so metrics label it alike."""

    def __init__(self, app: ASGIApp, route: BaseRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        id_text = users.fast_get_user_id(scope) if scope["type"] == "http" else None
        if id_text is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            await users.fast_get_user(scope["app"].state.context, scope, send, id_text)
        except (MessengerError, HttpError) as exc:
            handler = handle_http_error if isinstance(exc, HttpError) else handle_messenger_error
            response = await handler(Request(scope), exc)
            await response(scope, receive, send)


OpenContext = Callable[[Starlette], AbstractAsyncContextManager[ApiContext]]
"""Opens what the app serves with when it starts and closes it when it stops (its lifespan)."""


def build_app(open_context: OpenContext, metrics: Metrics) -> Starlette:
    """The Starlette app: every route, the error mapping, request metrics into `metrics`."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_context(app) as context:
            app.state.context = context  # read back by api.context.context(request)
            yield

    app = Starlette(
        routes=[*users.routes, *follows.routes, *accounts.routes, *conversations.routes,
                *ws.routes, *ops.routes, *openapi_routes(), *cluster.routes, *pages.routes],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    # Added innermost first: the fast path for GET /users/{id} runs inside the session check,
    # so a revoked session is refused there too, and both inside the metrics.
    user_route = next(r for r in users.routes if getattr(r, "name", None) == "user")
    app.add_middleware(UserReadFastPath, route=user_route)
    app.add_middleware(SessionCheck)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
