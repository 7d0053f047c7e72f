"""The real deployment shape in tests: `messenger serve` (granian, prefork) on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.ports import free_port

SRC = Path(__file__).parents[2] / "src"


@contextmanager
def serving(topology_path: Path, *, workers: int = 2, ready_within_s: float = 60, **env: str) -> Iterator[tuple[str, int]]:
    """Serve until the block ends; yields the base URL and the server's pid. `env` adds
    MESSENGER_* settings (open users are on, as the load scenarios need)."""
    port = free_port()
    # Every test client is 127.0.0.1: the per-address limits would add up over the session.
    per_address = {"MESSENGER_REGISTRATIONS_PER_CLIENT": "1000000", "MESSENGER_LOGIN_ATTEMPTS_PER_CLIENT": "1000000"}
    environment = dict(os.environ, PYTHONPATH=str(SRC), MESSENGER_OPEN_USERS="1", **{**per_address, **env})
    process = subprocess.Popen(
        [sys.executable, "-m", "messenger", "serve", "--port", str(port), "--workers", str(workers),
         "--topology", str(topology_path)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within_s
        while not _ready(process, base):
            assert time.monotonic() < deadline, f"granian did not serve /ready within {ready_within_s} s"
            time.sleep(0.2)
        yield base, process.pid
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _ready(process: subprocess.Popen[bytes], base: str) -> bool:
    if process.poll() is not None:
        output = process.stdout.read().decode() if process.stdout else ""
        raise AssertionError(f"server exited with {process.returncode}:\n{output}")
    try:
        return httpx.get(f"{base}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
