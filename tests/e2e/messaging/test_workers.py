"""The real deployment shape: `serve` (granian, two worker processes): an event produced on one
worker reaches sockets held by the other through Redis pub/sub."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from messenger.services.tokens import TokenSigner
from tests.e2e.messaging.support import LiveClient, new_user, open_direct, send
from tests.support.servers import serving


@pytest.fixture(scope="module")
def two_workers(cluster: Any) -> Iterator[str]:
    with serving(cluster.topology_path, MESSENGER_SEND_RATE="1000", MESSENGER_SEND_BURST="1000") as (base, _):
        yield base


async def test_a_message_sent_on_one_worker_reaches_sockets_on_every_worker(
    two_workers: str, tokens: TokenSigner
) -> None:
    ws = two_workers.replace("http://", "ws://")
    # No keep-alive: every request and socket is a new connection, which the kernel spreads
    # over both workers; with 8 sockets and 10 sends, every send meets sockets on the other one.
    async with httpx.AsyncClient(base_url=two_workers, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        a, b = await new_user(http, tokens), await new_user(http, tokens)
        cid = (await open_direct(http, a, b))["conversation"]["id"]
        sockets = [await LiveClient.connect(ws, b) for _ in range(8)]
        try:
            latencies = []
            for i in range(10):
                started = time.perf_counter()
                sent = await send(http, a, cid, f"across workers {i}")
                arrivals = await asyncio.gather(*(s.expect("message.created") for s in sockets))
                latencies.append(time.perf_counter() - started)
                assert {e["message"]["id"] for e in arrivals} == {sent["id"]}
        finally:
            for s in sockets:
                await s.close()
    print(f"\nsend -> delivered on all 8 sockets (2 workers): median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
