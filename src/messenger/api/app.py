"""The ASGI application: routes, error mapping, metrics, and the lifespan that owns every
connection of the worker process (pools, Redis, the replica monitors)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger.api import accounts, cluster, conversations, follows, ops, pages, users, ws
from messenger.api.errors import EXCEPTION_HANDLERS
from messenger.api.openapi import openapi_routes
from messenger.background import BackgroundWork
from messenger.metrics import Metrics
from messenger.services.accounts import AccountService, LoginLimits
from messenger.services.cursor import CursorCodec
from messenger.services.follows import FollowService
from messenger.services.live import LiveHub
from messenger.services.messaging import MessagingService
from messenger.services.passwords import Passwords
from messenger.services.tokens import TokenSigner
from messenger.services.users import UserService
from messenger.settings import Settings
from messenger.storage.accounts import AccountStore
from messenger.storage.claims import ClaimStore
from messenger.storage.conversation_log import ConversationLog
from messenger.storage.conversations import ConversationStore
from messenger.storage.follows import FollowStore
from messenger.storage.inbox import InboxStore
from messenger.storage.messages import MessageStore
from messenger.storage.redis.rate_limits import RateLimit, TokenBucket
from messenger.storage.schema import check_migrations
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.freshness import FreshnessMarkers
from messenger.storage.shards.pools import PoolSizing, ShardPools
from messenger.storage.shards.router import ShardRouter
from messenger.storage.users import UserRepository

log = logging.getLogger(__name__)


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


def create_app(settings: Settings) -> Starlette:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        head = await check_migrations(settings.topology)
        pools = ShardPools(
            settings.topology.shards,
            PoolSizing(
                settings.pool_min_size or settings.pool_max_size,
                settings.pool_max_size,
                settings.primary_timeout,
            ),
            app_name="messenger-api",
        )
        await pools.open()
        freshness = FreshnessMarkers(
            settings.topology.redis_url,
            ttl_ms=settings.freshness_ttl_ms,
            timeout_s=settings.redis_timeout_s,
            breaker=CircuitBreaker("redis", failure_threshold=1, reset_after=1.0),
        )
        router = ShardRouter(settings.topology, pools, freshness, settings, metrics)
        redis = Redis.from_url(
            settings.topology.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        passwords = Passwords()
        conversation_log = ConversationLog(router)
        hub = LiveHub(
            conversation_log, redis_url=settings.topology.redis_url,
            timeout_s=max(settings.redis_timeout_s, 0.5), queue_limit=settings.ws_queue_limit,
        )
        background = BackgroundWork(router) if settings.run_background else None
        try:
            # Know every shard's state before the first request, then keep watching.
            await asyncio.gather(*(router.check_shard(s) for s in router.shard_indexes))
            router.start_monitor()
            app.state.settings = settings
            app.state.metrics = metrics
            app.state.router = router
            app.state.freshness = freshness
            app.state.schema_version = head
            cursors = CursorCodec(settings.cursor_secret)
            app.state.users = UserService(UserRepository(router), cursors, open_users=settings.open_users)
            app.state.follows = FollowService(FollowStore(router), cursors)
            app.state.tokens = TokenSigner(settings.token_secret, access_ttl_s=settings.access_ttl_s)
            app.state.accounts = AccountService(
                ClaimStore(router), AccountStore(router), passwords, app.state.tokens,
                LoginLimits(
                    RateLimit(redis, "login-account", settings.login_failures_per_account, settings.login_window_s),
                    RateLimit(redis, "login-client", settings.login_attempts_per_client, settings.login_window_s),
                ),
                refresh_ttl_s=settings.refresh_ttl_s,
            )
            app.state.hub = hub
            app.state.messaging = MessagingService(
                ConversationStore(router), MessageStore(router), InboxStore(router), conversation_log,
                UserRepository(router), hub,
                TokenBucket(redis, "send", rate=settings.send_rate_per_s, burst=settings.send_burst),
                CursorCodec(settings.cursor_secret), member_limit=settings.member_limit,
            )
            if background is not None:
                background.start()
            yield
        finally:
            await hub.close()
            if background is not None:
                await background.stop()
            passwords.close()
            await redis.aclose()
            await router.stop_monitor()
            await freshness.close()
            await pools.close()

    app = Starlette(
        routes=[*users.routes, *follows.routes, *accounts.routes, *conversations.routes,
                *ws.routes, *ops.routes, *openapi_routes(), *cluster.routes, *pages.routes],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def create_app_from_env() -> Starlette:
    """Factory for the ASGI server's workers: settings from MESSENGER_* and the topology file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    return create_app(Settings.from_env())
