"""Pid files and ports: is a daemon of ours alive, is a port free, who holds it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from messenger.cluster.service_user import ServiceUser, give_to, run_as


def pid_from_file(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process is alive, else None (a stale file is removed)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return pid


def terminate(pidfile: Path, sig: signal.Signals = signal.SIGTERM, timeout: float = 10) -> None:
    pid = pid_from_file(pidfile)
    if pid is None:
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pidfile.unlink(missing_ok=True)
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str:
    """A short description of the process listening on `port`, if `ss` can tell."""
    try:
        out = subprocess.run(
            ["ss", "-H", "-ltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown process"
    if 'users:((' in out:
        return out.split("users:((", 1)[1].split("))", 1)[0]
    return "unknown process"


def accepts_tcp(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_tcp(port: int, timeout: float = 15, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while not accepts_tcp(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f} s")
        time.sleep(0.05)


def prepare_files(user: ServiceUser, directory: Path, log_file: Path) -> None:
    """The daemon's directory and log file, owned by the user it runs as."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    give_to(user, directory)
    give_to(user, log_file)


def start_daemon(user: ServiceUser, args: list[str], name: str, port: int) -> None:
    """Run a self-daemonising server as `user` and wait until it listens on `port`."""
    result = run_as(user, args)
    if result.returncode != 0:
        raise RuntimeError(f"{name} did not start: {result.stderr.strip() or result.stdout.strip()}")
    wait_for_tcp(port, what=name)
