"""The small pipelined Redis client, against the session's Redis and against bad servers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from messenger.storage.redis.resp import RedisUnavailable, RespClient


async def test_set_get_and_missing_key(cluster: Any) -> None:
    client = RespClient(cluster.topology.redis_url, timeout=1.0)
    key = f"test:{uuid.uuid4()}"
    try:
        assert await client.command("GET", key) is None
        assert await client.command("SET", key, "v", "PX", "5000") == b"OK"
        assert await client.command("GET", key) == b"v"
    finally:
        await client.command("DEL", key)
        await client.close()


async def test_concurrent_commands_each_get_their_own_reply(cluster: Any) -> None:
    client = RespClient(cluster.topology.redis_url, timeout=1.0)
    keys = [f"test:{uuid.uuid4()}" for _ in range(50)]
    try:
        await asyncio.gather(*(client.command("SET", k, k) for k in keys))
        replies = await asyncio.gather(*(client.command("GET", k) for k in keys))
        assert replies == [k.encode() for k in keys]
    finally:
        await client.command("DEL", *keys)
        await client.close()


async def test_error_reply_raises(cluster: Any) -> None:
    client = RespClient(cluster.topology.redis_url, timeout=1.0)
    try:
        with pytest.raises(RedisUnavailable):
            await client.command("NOSUCHCOMMAND")
        assert await client.command("PING") == b"PONG"  # the connection is still in sync
    finally:
        await client.close()


async def test_refused_connection_raises_quickly() -> None:
    client = RespClient("redis://127.0.0.1:1/0", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable):
        await client.command("PING")
    assert time.monotonic() - started < 0.5


async def test_silent_server_times_out_and_the_next_command_reconnects() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await client.command("GET", "k")
        assert time.monotonic() - started < 0.5
        with pytest.raises(RedisUnavailable):
            await client.command("GET", "k")
        assert len(accepted) == 2, "a timed-out connection must not be reused"
    finally:
        await client.close()
        server.close()
        for writer in accepted:
            writer.close()
