"""Round trips per message send, counted where they arrive (not collected with the suite: run
it by path, `pytest -q -s tests/e2e/messaging/measure_send_round_trips.py`; point PYTHONPATH at
another checkout's src to count its code).

One member sends N messages, one after the other, to a group of five users spread over the
shards, through the app in process (relay and pruning off, so only the sends and the replica
monitor reach PgBouncer). PgBouncer `SHOW STATS` and Redis `INFO stats` deltas over the sends,
minus the same counters over an idle stretch as long, divided by N; and this process's CPU
per send (the app and its client together: compare runs made one after the other, not the
figure; the databases' and PgBouncers' CPU is not in it).
"""

import asyncio
import time
from dataclasses import replace

from messenger.bench.round_trips import snapshot
from messenger.services.tokens import TokenSigner
from messenger.settings import Settings
from tests.e2e.api.conftest import running_app, runtime
from tests.e2e.messaging.support import create_group, new_users, send

N = 300


async def test_round_trips_per_send(chat_settings: Settings, tokens: TokenSigner) -> None:
    topology = chat_settings.topology
    for cache in (False, True):
        config = replace(chat_settings, cache=cache, run_background=False)
        async with running_app(config) as client:
            sender, *others = await new_users(client, tokens, 5)
            cid = str((await create_group(client, sender, others))["conversation"]["id"])
            for _ in range(20):  # warm: pools, the sender in the users cache
                await send(client, sender, cid, "warm")
            # Past the sender's freshness marker (5 s: reads of a key written lately bypass the
            # users cache) and the cache's hold after its subscription began (3 s).
            await asyncio.sleep(config.freshness_ttl_ms / 1000 + 0.5)
            await send(client, sender, cid, "fills the users cache")
            redis = runtime(client).redis
            await redis.execute_command("CONFIG", "RESETSTAT")
            before, start = await asyncio.to_thread(snapshot, topology), time.perf_counter()
            cpu = time.process_time()
            for i in range(N):
                await send(client, sender, cid, f"m{i}")
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
            sent = await asyncio.to_thread(snapshot, topology)
            stats = await redis.execute_command("INFO", "commandstats")
            await asyncio.sleep(elapsed)
            idle = await asyncio.to_thread(snapshot, topology)
        busy, quiet = sent - before, idle - sent
        db = (busy.database - quiet.database) / N
        redis = (busy.redis - quiet.redis) / N
        print(
            f"\ncache {'on' if cache else 'off'}: {N} sends in {elapsed:.1f} s: "
            f"{db:.2f} database and {redis:.2f} Redis round trips per send "
            f"(raw {busy.database / N:.2f} / {busy.redis / N:.2f}; idle over as long: "
            f"{quiet.database} / {quiet.redis}); {N / elapsed:.0f} sends/s, "
            f"{cpu / N * 1e6:,.0f} µs CPU of this process (app and client) per send"
        )
        print("Redis commands per send:", ", ".join(
            f"{name.removeprefix('cmdstat_')} {int(stat['calls']) / N:.2f}" for name, stat in stats.items()
            if int(stat["calls"]) >= N / 2
        ))
