"""Measure the HTTP stack choices on this machine, all in one run so the ratios are comparable:
raw ASGI vs Starlette, msgspec vs orjson, for an empty handler and a JSON GET of a user, each
served by granian (2 workers, uvloop) and loaded with wrk.

    PYTHONPATH=src python scripts/measure_framework.py [--seconds 5] [--connections 64]

No database is involved: this isolates the cost of the framework and the encoder.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

VARIANT_ENV = "MEASURE_VARIANT"
USER = {
    "id": str(uuid.UUID("0193a5b2-4c1d-7e8f-9a0b-1c2d3e4f5a6b")),
    "first_name": "Ada",
    "last_name": "Lovelace",
    "created_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
    "updated_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
}
VARIANTS = [
    "raw-empty", "starlette-empty",
    "raw-msgspec", "raw-orjson", "starlette-msgspec", "starlette-orjson",
]


def build_app():  # called by granian in each worker (factory)
    variant = os.environ[VARIANT_ENV]
    framework, _, kind = variant.partition("-")
    if kind == "msgspec":
        import msgspec

        encode = msgspec.json.Encoder().encode
    elif kind == "orjson":
        import orjson

        encode = orjson.dumps
    else:
        def encode(_obj: object) -> bytes:
            return b""
    ctype = b"application/json" if kind != "empty" else b"text/plain"

    if framework == "raw":
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            body = encode(USER)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        return app

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def handler(request):
        return Response(encode(USER), media_type=ctype.decode())

    return Starlette(routes=[Route("/api/v1/users/{id}", handler)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def measure(variant: str, seconds: int, connections: int, workers: int) -> float:
    port = free_port()
    env = dict(os.environ, **{VARIANT_ENV: variant})
    server = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--workers", str(workers),
         "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "scripts.measure_framework:build_app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/api/v1/users/0193a5b2-4c1d-7e8f-9a0b-1c2d3e4f5a6b"
        subprocess.run(["wrk", "-t2", "-c16", "-d1s", url], check=False, capture_output=True)  # warm up
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
                             check=False, capture_output=True, text=True).stdout
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # Rounds interleave the variants so that load from anything else on the machine spreads
    # over all of them; the median of each is reported.
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v in VARIANTS:
            samples[v].append(measure(v, args.seconds, args.connections, args.workers))
    results = {v: statistics.median(s) for v, s in samples.items()}
    base = results["raw-empty"]
    print("| variant | req/s | vs raw-empty |\n| --- | ---: | ---: |")
    for v, rps in results.items():
        print(f"| {v} | {rps:,.0f} | {rps / base:.2f} |")


if __name__ == "__main__":
    main()
