"""The composition root: the one place that builds what a process runs with.

An API worker's `open_runtime` opens, in order, the shard pools, the freshness markers, the
router (and its replica monitors), the Redis client, the stores, the services, the live hub and
the background work (outbox relay, claims sweeper), and closes them when the block ends; the
routes get the `ApiContext` out of it, nothing else. `create_app_from_env` is the factory the
ASGI server's workers load (`messenger serve`); `run_background` is `messenger relay`.
Nothing connects at import time, and no module keeps a connection in a global.

Where code goes (the placement rule):

- one shard transaction = one store method (`storage/`: the SQL beside the table it touches);
- a multi-shard protocol, or a use case that calls several stores = a service (`services/`:
  `AccountService.register`, reserve → write → confirm, is the model);
- the rules a change must obey, also those checked under a lock = domain functions
  (`domain/`), which the stores and services call;
- routes decode, call one service, encode (`api/`, which imports neither storage nor this
  module);
- building and wiring those = here.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette

from messenger.api.app import build_app
from messenger.api.clients import ClientAddresses
from messenger.api.context import ApiContext
from messenger.background import BackgroundWork
from messenger.domain.events import OutboxEvent
from messenger.metrics import Metrics
from messenger.services.accounts import AccountLimits, AccountService
from messenger.services.cluster import ClusterOverview
from messenger.services.cursor import CursorCodec
from messenger.services.follows import FollowService
from messenger.services.live import LiveHub
from messenger.services.messaging import MessagingLimits, MessagingService
from messenger.services.ops import OpsService
from messenger.services.passwords import Passwords
from messenger.services.sessions import Sessions
from messenger.services.tokens import TokenSigner
from messenger.services.users import UserService
from messenger.settings import Settings, retention_from_env
from messenger.storage.accounts import AccountStore
from messenger.storage.cache.bus import (
    EVERY_KEY,
    MEMBERS_CHANNEL,
    USERS_CHANNEL,
    InvalidationBus,
    publish_invalidation,
)
from messenger.storage.cache.members import MembershipCache
from messenger.storage.cache.users import UserCache
from messenger.storage.claims import ClaimStore
from messenger.storage.conversation_log import ConversationLog
from messenger.storage.conversations import ConversationStore
from messenger.storage.follows import FollowStore
from messenger.storage.inbox import InboxStore
from messenger.storage.messages import MessageStore
from messenger.storage.redis.rate_limits import Backoff, ConcurrencyLimit, FixedWindow, TokenBucket
from messenger.storage.redis.reshard_status import latest as latest_reshard
from messenger.storage.redis.revocations import RevocationStore
from messenger.storage.relay.handlers import memberships_changed, users_rows_changed
from messenger.storage.relay.runner import Applied
from messenger.storage.retention import Retention
from messenger.storage.schema import check_migrations
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.freshness import FreshnessMarkers
from messenger.storage.shards.freshness_feed import FreshnessFeed
from messenger.storage.shards.pools import PoolSizing, ShardPools
from messenger.storage.shards.primaries import PrimaryPools
from messenger.storage.shards.router import ShardRouter
from messenger.storage.shards.topology_watch import TopologyWatcher
from messenger.storage.users import UserStore
from messenger.topology import Topology

API_APP_NAME = "messenger-api"
"""application_name of the API's database connections (pg_stat_activity)."""
SHUTDOWN_STEP_S = 5.0
"""How long one closing step of a worker may take before the worker goes on without it."""

log = logging.getLogger(__name__)


def bounded(name: str, close: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """A closing step that cannot hold the process open: one still running after
    SHUTDOWN_STEP_S is cancelled and left, and logged by name."""
    async def step() -> None:
        task = asyncio.ensure_future(close())
        done, _ = await asyncio.wait((task,), timeout=SHUTDOWN_STEP_S)
        if not done:
            task.cancel()
            log.warning("shutdown: %s did not finish within %.0f s; going on without it", name, SHUTDOWN_STEP_S)
        elif task.exception() is not None:
            log.warning("shutdown: %s failed: %r", name, task.exception())

    return step


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything one API process built, open while `open_runtime`'s block runs. The routes
    see `api` only; tests and tools may look at the rest (`runtime_of(app)`)."""

    settings: Settings
    metrics: Metrics
    pools: ShardPools
    freshness: FreshnessMarkers
    router: ShardRouter
    redis: Redis
    hub: LiveHub
    user_cache: UserCache | None
    """None with MESSENGER_CACHE=off."""
    member_cache: MembershipCache | None
    """None with MESSENGER_CACHE=off."""
    background: BackgroundWork | None
    """None with MESSENGER_BACKGROUND=0 (the relay runs as a process of its own)."""
    api: ApiContext


@asynccontextmanager
async def open_runtime(settings: Settings, metrics: Metrics) -> AsyncIterator[Runtime]:
    """Open everything an API worker needs, in dependency order; close it in reverse order.

    Refuses to start (SchemaDrift) unless every shard is at the migration head.
    """
    head = await check_migrations(settings.topology)
    pools = ShardPools(
        settings.topology.shards,
        PoolSizing(
            settings.pool_min_size or settings.pool_max_size,
            settings.pool_max_size,
            settings.primary_timeout,
        ),
        app_name=API_APP_NAME,
    )
    await pools.open()
    async with AsyncExitStack() as opened:  # each close registered as soon as there is one
        opened.push_async_callback(bounded("shard pools", pools.close))
        feed = _open_feed(settings, opened)
        freshness = FreshnessMarkers(
            settings.topology.redis_url,
            ttl_ms=settings.freshness_ttl_ms,
            timeout_s=settings.redis_timeout_s,
            breaker=CircuitBreaker("redis", failure_threshold=1, reset_after=1.0),
            metrics=metrics,
            feed=feed,
        )
        opened.push_async_callback(bounded("freshness markers", freshness.close))
        router = ShardRouter(settings.topology, pools, freshness, settings, metrics)
        opened.push_async_callback(bounded("router monitor", router.stop_monitor))
        redis = Redis.from_url(
            settings.topology.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        opened.push_async_callback(bounded("redis client", redis.aclose))
        passwords = Passwords()
        opened.callback(passwords.close)
        background = BackgroundWork(
            router, retention=retention(settings), applied=functools.partial(_caches_changed, redis)
        ) if settings.run_background else None
        if background is not None:
            opened.push_async_callback(bounded("background work", background.stop))
        conversation_log = ConversationLog(router)
        hub = LiveHub(
            conversation_log, redis_url=settings.topology.redis_url,
            timeout_s=max(settings.redis_timeout_s, 0.5), queue_limit=settings.ws_queue_limit,
            socket_slots=ConcurrencyLimit(
                redis, "sockets", settings.sockets_per_user, lease_s=3 * settings.ws_heartbeat_s
            ),
            typing_per_s=settings.typing_per_socket_per_s,
        )
        opened.push_async_callback(bounded("live hub", hub.close))  # first to close: sockets hear 1001 at once

        user_cache, member_cache = await _open_caches(settings, metrics, redis, opened)

        # Know every shard's state before the first request, then keep watching.
        await asyncio.gather(*(router.check_shard(s) for s in router.shard_indexes))
        router.start_monitor()
        # A new epoch (resharding) is adopted without a restart; stopped before the router.
        watcher = TopologyWatcher(router, settings.topology.path, redis)
        watcher.start()
        opened.push_async_callback(bounded("topology watcher", watcher.stop))
        api = _api_context(
            settings, metrics, router, freshness, redis, passwords, conversation_log, hub, head, user_cache,
            member_cache,
        )
        if background is not None:
            background.start()
        yield Runtime(
            settings, metrics, pools, freshness, router, redis, hub, user_cache, member_cache, background, api
        )


def _open_feed(settings: Settings, opened: AsyncExitStack) -> FreshnessFeed | None:
    """This worker's copy of the freshness markers (None with MESSENGER_FRESHNESS_FEED=off):
    it subscribes in the background, and reads ask Redis until it is complete."""
    if not (settings.freshness_feed and settings.read_your_writes):
        return None
    feed = FreshnessFeed(
        settings.topology.redis_url, ttl_s=settings.freshness_ttl_ms / 1000,
        timeout_s=max(settings.redis_timeout_s, 0.5),
    )
    feed.start()
    opened.push_async_callback(bounded("freshness feed", feed.close))
    return feed


async def _open_caches(
    settings: Settings, metrics: Metrics, redis: Redis, opened: AsyncExitStack
) -> tuple[UserCache | None, MembershipCache | None]:
    """The read caches (users by id, conversation memberships) and their invalidation
    subscriber, one for both (None, None when switched off).

    The subscriber has a connection of its own without a read timeout (the channels may be
    quiet for long); its health checks notice a dead connection, which clears the caches.
    """
    if not settings.cache:
        return None, None
    hold_s = settings.max_replica_lag_s  # a replica further behind is not read from
    users = UserCache(settings.cache_size, ttl_s=settings.cache_ttl_s, hold_s=hold_s, metrics=metrics)
    members = MembershipCache(settings.cache_size, ttl_s=settings.cache_ttl_s, hold_s=hold_s, metrics=metrics)
    listener = Redis.from_url(
        settings.topology.redis_url,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=5,
        # No silent reconnect-and-resubscribe inside the client: a lost connection must reach
        # the bus at once (stop serving), not only when the resubscription is confirmed.
        retry=Retry(NoBackoff(), 0),
    )
    opened.push_async_callback(bounded("cache invalidation listener", listener.aclose))

    def connected(up: bool) -> None:
        users.set_connected(up)
        members.set_connected(up)

    bus = InvalidationBus(
        redis, listener, {users.name: users.invalidate_text, members.name: members.invalidate_text},
        on_connected=connected,
    )
    users.publish_through(bus)
    members.publish_through(bus)
    bus.start()
    opened.push_async_callback(bounded("cache invalidation bus", bus.stop))
    return users, members


def _api_context(
    settings: Settings, metrics: Metrics, router: ShardRouter, freshness: FreshnessMarkers,
    redis: Redis, passwords: Passwords, conversation_log: ConversationLog, hub: LiveHub,
    schema_version: str, user_cache: UserCache | None = None, member_cache: MembershipCache | None = None,
) -> ApiContext:
    """The stores over the router, and the services over them."""
    cursors = CursorCodec(settings.cursor_keys)
    users = UserStore(router, user_cache)
    tokens = TokenSigner(settings.token_keys, access_ttl_s=settings.access_ttl_s)
    # A revocation outlives every access token it could concern.
    sessions = Sessions(RevocationStore(redis, ttl_s=settings.access_ttl_s + 60), hub)
    accounts = AccountService(
        ClaimStore(router), AccountStore(router, user_cache), passwords, tokens,
        _account_limits(redis, settings),
        sessions=sessions, refresh_ttl_s=settings.refresh_ttl_s,
    )
    messaging = MessagingService(
        ConversationStore(router, member_cache), MessageStore(router, member_cache), InboxStore(router), conversation_log,
        users, hub,
        TokenBucket(redis, "send", rate=settings.send_rate_per_s, burst=settings.send_burst),
        cursors, member_limit=settings.member_limit, limits=_messaging_limits(redis, settings),
    )
    return ApiContext(
        settings=settings,
        metrics=metrics,
        users=UserService(users, cursors, open_users=settings.open_users, sessions=sessions),
        follows=FollowService(FollowStore(router, user_cache), cursors),
        accounts=accounts,
        messaging=messaging,
        hub=hub,
        tokens=tokens,
        sessions=sessions,
        clients=ClientAddresses(settings.trusted_proxies),
        ops=OpsService(router, freshness, users, metrics, schema_version=schema_version),
        cluster=ClusterOverview(router, resharding=functools.partial(latest_reshard, redis)),
    )


def _account_limits(redis: Redis, s: Settings) -> AccountLimits:
    def backoff(name: str) -> Backoff:
        return Backoff(redis, name, free=s.login_failures_per_account, base_s=s.login_backoff_base_s,
                       max_s=s.login_backoff_max_s, ttl_s=s.login_window_s)

    return AccountLimits(
        FixedWindow(redis, "login-client", s.login_attempts_per_client, s.login_window_s, fail_closed=True),
        backoff("login-account"),
        backoff("password-account"),
        FixedWindow(redis, "register-client", s.registrations_per_client, s.registration_window_s),
        TokenBucket(redis, "account-change", rate=s.account_change_rate_per_s, burst=s.account_change_burst),
    )


def _messaging_limits(redis: Redis, s: Settings) -> MessagingLimits:
    return MessagingLimits(
        conversations=TokenBucket(redis, "conversation-create", rate=s.group_rate_per_s, burst=s.group_burst),
        member_adds=FixedWindow(redis, "member-adds", s.members_added_per_window, s.members_window_s),
        members_per_request=s.members_per_request,
        edits=TokenBucket(redis, "edit", rate=s.edit_rate_per_s, burst=s.edit_burst),
        resumes=TokenBucket(redis, "resume", rate=s.resume_rate_per_s, burst=s.resume_burst),
    )


def create_app(settings: Settings, *, freeze_after_start: bool = False) -> Starlette:
    """The API as an ASGI app; its lifespan opens the process's runtime (`open_runtime`).

    `freeze_after_start` (a worker process's one app): once the runtime is open, everything
    built so far lives as long as the process, so it is moved out of the garbage collector's
    sight (gc.freeze). A full collection walks every tracked object, and walking those paused
    a worker up to 250 ms under the open loop (docs/performance.md)."""
    metrics = Metrics()

    @asynccontextmanager
    async def open_context(app: Starlette) -> AsyncIterator[ApiContext]:
        async with open_runtime(settings, metrics) as runtime:
            app.state.runtime = runtime
            if freeze_after_start:
                gc.freeze()
            yield runtime.api

    return build_app(open_context, metrics)


def runtime_of(app: Starlette) -> Runtime:
    """The runtime of an app made by `create_app` while its lifespan runs (tests, tools)."""
    return cast(Runtime, app.state.runtime)


def create_app_from_env() -> Starlette:
    """Factory for the ASGI server's workers: settings from MESSENGER_* and the topology file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    return create_app(Settings.from_env(), freeze_after_start=True)


def retention(settings: Settings) -> Retention:
    """How long the background pruner keeps each prunable kind of row."""
    return Retention(
        delivered_outbox=timedelta(seconds=settings.delivered_outbox_retention_s),
        applied_events=timedelta(seconds=settings.applied_events_retention_s),
        refresh_tokens=timedelta(seconds=settings.refresh_token_retention_s),
        event_log=timedelta(seconds=settings.event_log_retention_s),
    )


async def run_background(topology: Topology) -> None:
    """The outbox relay and claims sweeper over the shards' primaries until cancelled
    (`messenger relay`; API workers run the same inside `open_runtime`), adopting new topology
    epochs as they are published and pruning with the same MESSENGER_*_RETENTION settings as
    the API workers."""
    redis = Redis.from_url(topology.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        async with PrimaryPools(topology) as pools:
            watcher = TopologyWatcher(pools, topology.path, redis)
            watcher.start()
            try:
                await BackgroundWork(
                    pools,
                    retention=relay_retention(topology),
                    applied=functools.partial(_caches_changed, redis),
                ).run()
            finally:
                await watcher.stop()
    finally:
        await redis.aclose()


async def _caches_changed(redis: Redis, event: OutboxEvent, applied: Applied | None) -> None:
    """After the relay applied an event: every worker's read caches drop the rows it changed
    (whether or not this process caches: other instances may). user.deleted removed the
    deleted user's memberships, in conversations nobody names cheaply: every memberships
    cache is cleared."""
    changed = users_rows_changed(event, applied)
    for key in [EVERY_KEY] if changed is None else [str(u) for u in changed]:
        await publish_invalidation(redis, USERS_CHANNEL, key)
    if memberships_changed(event):
        await publish_invalidation(redis, MEMBERS_CHANNEL, EVERY_KEY)


def relay_retention(topology: Topology) -> Retention:
    """The retention settings from the environment, without the rest of Settings (no keys)."""
    kept = retention_from_env()
    return retention(replace(
        Settings(topology=topology),
        delivered_outbox_retention_s=kept["delivered_outbox_retention_s"],
        applied_events_retention_s=kept["applied_events_retention_s"],
        refresh_token_retention_s=kept["refresh_token_retention_s"],
        event_log_retention_s=kept["event_log_retention_s"],
    ))
