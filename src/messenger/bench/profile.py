"""Where the server's time goes: py-spy samples the server's workers during a phase.

py-spy's raw output is one line per distinct stack, `frame;frame;...;frame count`. The report
keeps the frames that are on top of the stack most often (self time) and those that appear in
most samples (inclusive time), which is usually enough to tell a slow query path from JSON,
logging or event-loop overhead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TOP_FRAMES = 15
SAMPLE_RATE_HZ = 100


def find_py_spy() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


@dataclass
class ServerProfiler:
    """A py-spy recording of a process and its children, started before a phase."""

    pid: int
    duration: float
    output: Path
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        py_spy = find_py_spy()
        if py_spy is None:
            return False
        cmd = [py_spy, "record", "--pid", str(self.pid), "--subprocesses", "--nonblocking"]
        cmd += ["--rate", str(SAMPLE_RATE_HZ), "--duration", str(max(1, round(self.duration)))]
        cmd += ["--format", "raw", "--output", str(self.output)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True

    def finish(self) -> dict[str, object] | None:
        """Wait for the recording and summarise it; None when py-spy was missing or failed."""
        if self._proc is None:
            return None
        try:
            self._proc.wait(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            return None
        if not self.output.exists():
            return None
        return summarise_raw(self.output.read_text())


NO_PYTHON_FRAME = "(no Python frame: native or idle thread)"
SCAFFOLDING = ("granian/", "click/", "multiprocessing/", "<module>", "runpy", "threading.py")
"""Frames every sample passes through on its way from process start to the app; they say
nothing about where the time goes, so they are left out of the inclusive ranking."""


def summarise_raw(raw: str, top: int = TOP_FRAMES) -> dict[str, object]:
    """Top frames by self and by inclusive share of samples, from py-spy's raw format.

    With --subprocesses each stack starts with a `process N:"command"` pseudo-frame: it is
    dropped, and a stack with nothing else counts as time outside Python code.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        total += count
        own[frames[-1] if frames else NO_PYTHON_FRAME] += count
        for frame in set(frames):
            if not any(marker in frame for marker in SCAFFOLDING):
                inclusive[frame] += count
    if total == 0:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [{"frame": f, "share": n / total} for f, n in own.most_common(top)],
        "inclusive": [{"frame": f, "share": n / total} for f, n in inclusive.most_common(top)],
    }
