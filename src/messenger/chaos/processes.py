"""A server's processes, found from its pid file and /proc: to kill them or to pause them.

`kill -9` of a PostgreSQL server kills the postmaster and every backend it forked, as a crash
of its host would: killing the postmaster alone leaves backends that hold the old shared
memory and make the restart wait for them. Pausing (SIGSTOP) every process of a server is the
"cut off, no RST" fault: the kernel still completes TCP handshakes into the listen backlog,
but nothing answers, exactly as when packets are dropped on the way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


class ProcessError(Exception):
    """A server's process could not be found or did not go away."""


def read_pid(pidfile: Path) -> int:
    """The pid on the first line of a pid file (PostgreSQL's postmaster.pid, PgBouncer's, Redis's)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        raise ProcessError(f"no pid in {pidfile}: is the server running?") from None
    if not is_alive(pid):
        raise ProcessError(f"pid {pid} from {pidfile} is not running")
    return pid


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _stat_fields(pid)
    return state is not None and state[0] != "Z"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, …"""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant, parents first."""
    tree = [pid]
    for child in children(pid):
        tree += process_tree(child)
    return tree


def send(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: Iterable[int], timeout_s: float = 10.0) -> None:
    remaining = list(pids)
    deadline = time.monotonic() + timeout_s
    while remaining:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if not remaining:
            return
        if time.monotonic() > deadline:
            raise ProcessError(f"processes {remaining} still alive {timeout_s:.0f} s after SIGKILL")
        time.sleep(0.05)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and its descendants at once; returns the pids killed once they are gone."""
    tree = process_tree(pid)
    send(tree, signal.SIGKILL)
    wait_gone(tree)
    return tree
