"""Every process adopts a new topology epoch at run time, and says which epoch it is on.

The resharding workflow writes the topology file (`dump_topology`, an atomic rename) and
publishes the new epoch on `messenger:topology` (`publish_topology`). A `TopologyWatcher` in
each process hears it and adopts (`ShardRouter.adopt`); it also looks at the file's mtime every
second, so a process whose pub/sub connection is down still adopts within about a second or
two. A file that cannot be read is logged and the current topology kept.

Each watcher also writes a heartbeat, `messenger:topology:seen:<host>:<pid>` = epoch, every 2 s
with a 10 s expiry, so the workflow can wait until every live process has adopted epoch N
(`adopted_everywhere`) before it deletes the moved rows. A process that died drops out of the
set within 10 s. Nothing here runs or connects at import time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from contextlib import suppress
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from messenger.topology import Topology, TopologyError, dump_topology, load_topology

log = logging.getLogger(__name__)

CHANNEL = "messenger:topology"
SEEN_PREFIX = "messenger:topology:seen:"
POLL_S = 1.0
HEARTBEAT_S = 2.0
SEEN_TTL_S = 10


class Adopter(Protocol):
    """What adopts a topology: the router of an API worker."""

    @property
    def topology(self) -> Topology: ...

    async def adopt(self, topology: Topology) -> bool: ...


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class TopologyWatcher:
    """Adopts newer topologies from the file at `path` when told (pub/sub) or when the file
    changes, and keeps this process's heartbeat. `start()` in a running loop, `stop()` at the end."""

    def __init__(
        self,
        target: Adopter,
        path: Path | None,
        redis: Redis,
        *,
        poll_s: float = POLL_S,
        heartbeat_s: float = HEARTBEAT_S,
        identity: str | None = None,
    ) -> None:
        self._target = target
        self._path = path
        self._redis = redis
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self.seen_key = SEEN_PREFIX + (identity or process_identity())
        self._mtime: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._mtime = self._file_mtime()
        self._tasks = [
            asyncio.create_task(self._listen(), name="topology-listen"),
            asyncio.create_task(self._heartbeat(), name="topology-heartbeat"),
        ]
        if self._path is not None:
            self._tasks.append(asyncio.create_task(self._poll(), name="topology-poll"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with suppress(RedisError, OSError):
            await self._redis.delete(self.seen_key)

    async def check(self) -> bool:
        """Load the file and adopt it if its epoch is newer; whether it was adopted."""
        if self._path is None:
            return False
        async with self._lock:
            try:
                topology = load_topology(self._path)
            except TopologyError as exc:
                log.warning("topology not adopted, keeping epoch %d: %s", self._target.topology.epoch, exc)
                return False
            if topology.epoch <= self._target.topology.epoch:
                return False
            return await self._target.adopt(topology)

    def _file_mtime(self) -> float | None:
        if self._path is None:
            return None
        try:
            return self._path.stat().st_mtime
        except OSError:
            return None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            mtime = self._file_mtime()
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                await self._checked()

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    try:
                        epoch = int(message["data"])
                    except (TypeError, ValueError):
                        continue
                    if epoch > self._target.topology.epoch:
                        await self._checked()
            except (RedisError, OSError) as exc:
                log.debug("topology channel unavailable (the file is still watched): %s", exc)
                await asyncio.sleep(1.0)
            finally:
                with suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._redis.set(self.seen_key, str(self._target.topology.epoch), ex=SEEN_TTL_S)
            except (RedisError, OSError) as exc:
                log.debug("topology heartbeat not written: %s", exc)
            await asyncio.sleep(self._heartbeat_s)

    async def _checked(self) -> None:
        try:
            await self.check()
        except Exception:  # the watcher must outlive a failed adoption; the next change retries
            log.exception("adopting the topology failed")


async def adopted_everywhere(redis: Redis, epoch: int) -> tuple[bool, list[str]]:
    """Whether every live process (a heartbeat younger than 10 s) is on `epoch` or later, and
    the identities (`host:pid`) of those that are not."""
    laggards: list[str] = []
    async for key in redis.scan_iter(match=SEEN_PREFIX + "*", count=100):
        value = await redis.get(key)
        if value is None:  # expired between SCAN and GET: that process is gone
            continue
        name = (key.decode() if isinstance(key, bytes) else str(key))[len(SEEN_PREFIX):]
        try:
            seen = int(value)
        except ValueError:
            seen = -1
        if seen < epoch:
            laggards.append(name)
    return not laggards, sorted(laggards)


async def publish_topology(topology: Topology, path: Path, redis: Redis) -> None:
    """Write the topology file (atomically) and tell every process its epoch."""
    dump_topology(topology, path)
    await redis.publish(CHANNEL, str(topology.epoch))
