"""The empty-handler ceiling as wrk sees it: a C client, so the number is the server's, not ours."""

from __future__ import annotations

import re
import shutil
import subprocess

REQUESTS_PER_SEC = re.compile(r"Requests/sec:\s+([0-9.]+)")


def find_wrk() -> str | None:
    return shutil.which("wrk")


def wrk_rps(url: str, connections: int, duration: float, threads: int = 2) -> float | None:
    """Requests per second wrk reaches on `url`, or None when wrk is missing or fails."""
    wrk = find_wrk()
    if wrk is None:
        return None
    cmd = [wrk, f"-t{threads}", f"-c{max(connections, threads)}", f"-d{max(1, round(duration))}s"]
    proc = subprocess.run(
        [*cmd, url], check=False, capture_output=True, text=True, timeout=duration + 60
    )
    match = REQUESTS_PER_SEC.search(proc.stdout)
    return float(match.group(1)) if proc.returncode == 0 and match else None
