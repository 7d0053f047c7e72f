"""GET user-by-id with the cache on and off, in process (not collected with the suite: run it
by path, `pytest -q -s tests/e2e/api/measure_users_cache.py`). CPU is this process's (the app
and the httpx client together), so compare the ratio between the runs, not the figures."""

import resource
import time
from dataclasses import replace

from messenger.settings import Settings
from tests.e2e.api.conftest import USERS_URL, running_app, runtime
from tests.support.waiting import wait_for_async

N = 3000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _run(settings: Settings, on: bool) -> tuple[float, float, int]:
    async with running_app(replace(settings, cache=on)) as client:
        ids = []
        for i in range(50):
            r = await client.post(USERS_URL, json={"first_name": f"B{i}", "last_name": "X"})
            ids.append(r.json()["id"])
        if on:
            cache = runtime(client).user_cache
            assert cache is not None

            async def warm() -> bool:
                for u in ids:
                    await client.get(f"{USERS_URL}/{u}")
                return len(cache) == len(ids)

            await wait_for_async(warm, 20, "warm")
        else:
            for u in ids:
                await client.get(f"{USERS_URL}/{u}")
        c0, t0 = _cpu(), time.perf_counter()
        for i in range(N):
            r = await client.get(f"{USERS_URL}/{ids[i % len(ids)]}")
            assert r.status_code == 200
        c1, t1 = _cpu(), time.perf_counter()
        cache_after = runtime(client).user_cache
        hits = cache_after.hits if cache_after is not None else 0
        return (c1 - c0) / N * 1e6, N / (t1 - t0), hits


async def test_cache_on_and_off_alternately(settings: Settings) -> None:
    results = {}
    for on in (False, True, False, True):
        results.setdefault(on, []).append(await _run(settings, on))
    for on, rs in results.items():
        print(f"\ncache={'on' if on else 'off'}: " + "; ".join(f"{c:.0f} us CPU/req, {r:.0f} req/s, hits {h}" for c, r, h in rs))
