"""Measure what read-your-writes costs on GET /api/v1/users/{id}, all in one run:

- `off`:    MESSENGER_READ_YOUR_WRITES=0, reads go straight to the replica (no guarantee);
- `on`:     the default: one Redis GET per read, no marker found (keys not written lately);
- `marked`: every key read has a live marker, so each read also checks the replica's replay
            position in the same round trip (as a read right after a write does);
- `primary`: reference, every read from the primary (what a "read the primary after writes"
            design without markers would pay for hot keys).

A throwaway 3-shard cluster on free ports, granian with 2 workers, wrk with a Lua script
cycling over seeded ids.

    PYTHONPATH=src:. python scripts/measure_read_your_writes.py [--seconds 8] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import migrate
from scripts.measure_framework import free_port, wait_port
from tests.support.ports import free_base_port

LAUNCHER = (
    "import typer\nfrom messenger.cli.serve import register\napp = typer.Typer()\n"
    "@app.callback()\ndef main() -> None: pass\nregister(app)\napp()\n"
)
LOG = Path(tempfile.gettempdir()) / "measure_read_your_writes.log"
WRK_SCRIPT = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
local i = 0
request = function()
  i = (i %% #ids) + 1
  return wrk.format("GET", "/api/v1/users/" .. ids[i])
end
"""


def serve(topology: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, **env_extra)
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "serve", "--port", str(port), "--workers", "2",
         "--topology", str(topology)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(LOG, "ab"), start_new_session=True,  # noqa: SIM115
    )
    wait_port(port, 60)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("server not ready")
        time.sleep(0.2)
    return process, base


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        print(f"server {process.pid} did not stop on SIGINT within 20 s: killed", file=sys.stderr)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def wrk(base: str, script: Path, seconds: int, connections: int) -> float:
    url = f"{base}/"
    subprocess.run(["wrk", "-t2", "-c16", "-d2s", "-s", str(script), url], capture_output=True, check=False)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=False,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk failed:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="messenger-ryw-"))
    (root / "private").mkdir(mode=0o700)
    cluster = LocalCluster(root / "private" / "cluster", shards=3, base_port=free_base_port(3))
    try:
        cluster.up()
        assert all(o.ok for o in migrate(cluster.topology))
        topology = cluster.topology_path
        process, base = serve(topology, {})
        try:
            with httpx.Client(base_url=base) as client:
                ids = [
                    client.post("/api/v1/users", json={"first_name": f"B{i}", "last_name": "Bench"}).json()["id"]
                    for i in range(args.users)
                ]
        finally:
            stop(process)
        ids_file = root / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        script = root / "get.lua"
        script.write_text(WRK_SCRIPT % ids_file)
        markers = redis.Redis.from_url(cluster.topology.redis_url)
        samples: dict[str, list[float]] = {}
        variants = {
            "off": {"MESSENGER_READ_YOUR_WRITES": "0"},
            "on": {},
            "marked": {},
            "primary": {"MESSENGER_MAX_REPLICA_LAG": "-1"},
        }
        # Rounds interleave the variants so that load from anything else on the machine
        # spreads over all of them; the median of each is reported.
        for _ in range(args.rounds):
            for name, env in variants.items():
                markers.delete(*[f"ryw:{i}" for i in ids])
                if name == "marked":  # a marker far in the past: the replica has replayed it
                    markers.mset({f"ryw:{i}": f"{1:016x}" for i in ids})
                print(f"measuring {name}", file=sys.stderr)
                process, base = serve(topology, env)
                try:
                    samples.setdefault(name, []).append(wrk(base, script, args.seconds, args.connections))
                finally:
                    stop(process)
        results = {name: statistics.median(values) for name, values in samples.items()}
        print("| reads | req/s | vs off |\n| --- | ---: | ---: |")
        for name, rps in results.items():
            print(f"| {name} | {rps:,.0f} | {rps / results['off']:.2f} |")
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
