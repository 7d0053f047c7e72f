"""Fixtures for messaging: a real server (granian, embedded in the test's event loop, so its app
state stays reachable) over the session's cluster, an HTTP client for it, token minting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import httpx
import pytest
from granian.constants import Interfaces
from granian.server.embed import Server
from starlette.applications import Starlette

from messenger.bootstrap import Runtime, create_app, runtime_of
from messenger.services.tokens import TokenSigner
from messenger.settings import Settings
from messenger.storage.shards.ring import HashRing
from tests.e2e.api.conftest import settings, topology  # noqa: F401  (session fixtures reused)
from tests.support.ports import free_port
from tests.support.waiting import wait_for_async as wait_until


@dataclass(frozen=True)
class ChatServer:
    app: Starlette
    base: str
    ws: str

    @property
    def runtime(self) -> Runtime:
        return runtime_of(self.app)


@asynccontextmanager
async def serving(config: Settings) -> AsyncIterator[ChatServer]:
    """The API on a real socket, in this event loop, until the block ends."""
    app = create_app(config)
    port = free_port()
    server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGI, log_enabled=False)
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:

            async def ready() -> bool:
                if task.done():
                    task.result()
                try:
                    return (await probe.get("/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, 30, "the embedded server to answer")
        yield ChatServer(app, base, f"ws://127.0.0.1:{port}")
    finally:
        server.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="session")
def chat_settings(settings: Settings) -> Settings:  # noqa: F811
    # Sends are limited per user; tests that are not about the limit should not meet it.
    return replace(settings, send_rate_per_s=1000.0, send_burst=1000)


@pytest.fixture(scope="session")
async def chat(chat_settings: Settings) -> AsyncIterator[ChatServer]:
    async with serving(chat_settings) as server:
        yield server


@pytest.fixture(scope="session")
async def http(chat: ChatServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=chat.base, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def tokens(settings: Settings) -> TokenSigner:  # noqa: F811
    return TokenSigner(settings.token_keys, access_ttl_s=settings.access_ttl_s)


@pytest.fixture(scope="session")
def ring(settings: Settings) -> HashRing:  # noqa: F811
    return HashRing(settings.topology.shard_indexes)


@pytest.fixture
async def fresh(chat: ChatServer) -> ChatServer:
    """The server with its view of the shards brought up to date (tests stop servers)."""
    router = chat.runtime.router
    await asyncio.gather(*(router.check_shard(s) for s in router.shard_indexes))
    return chat
