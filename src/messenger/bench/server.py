"""Start and stop the HTTP servers under test (the API, the empty handler, the fake API)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def granian_command(target: str, port: int, workers: int, *, factory: bool = False) -> list[str]:
    """The granian invocation shared by every ASGI app we measure, so they compare fairly."""
    cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--no-ws"]
    cmd += ["--backlog", "4096", "--log-level", "warning"]
    return [*cmd, "--factory", target] if factory else [*cmd, target]


API_FACTORY = "messenger.bootstrap:create_app_from_env"
MESSAGING_ENV = {
    "MESSENGER_SEND_RATE": "1000000",
    "MESSENGER_SEND_BURST": "1000000",
    "MESSENGER_LOGIN_ATTEMPTS_PER_CLIENT": "1000000",
    "MESSENGER_LOGIN_FAILURES_PER_ACCOUNT": "1000000",
    "MESSENGER_REGISTRATIONS_PER_CLIENT": "1000000",
    "MESSENGER_GROUP_RATE": "1000000",
    "MESSENGER_GROUP_BURST": "1000000",
    "MESSENGER_MEMBERS_ADDED_PER_WINDOW": "1000000",
    "MESSENGER_RESUME_RATE": "1000000",
    "MESSENGER_RESUME_BURST": "1000000",
    "MESSENGER_SOCKETS_PER_USER": "1000",
}
"""Set on the API server the harness starts: the per-user send rate limit (5/s by default) and
the per-address sign-in limit (60 per 5 min, and every benchmark account signs in from
127.0.0.1) would otherwise turn the messaging scenario into a measurement of 429s. A server
given with --url needs the same settings."""


def api_command(port: int, workers: int, topology_path: Path) -> tuple[list[str], dict[str, str]]:
    """The real API: `messenger serve` when the CLI has it, else granian on the app factory.

    Both read the topology and worker count the same way; the fallback uses exactly the granian
    setup of the empty-handler ceiling, so the two stay comparable.
    """
    # The seed's scenarios create, change and delete profile-only users without tokens.
    env = {
        "MESSENGER_TOPOLOGY": str(topology_path),
        "MESSENGER_WORKERS": str(workers),
        "MESSENGER_OPEN_USERS": "1",
        **MESSAGING_ENV,
    }
    if importlib.util.find_spec("messenger.cli.serve") is not None:
        command = [sys.executable, "-m", "messenger", "serve", "--port", str(port)]
        command += ["--workers", str(workers), "--topology", str(topology_path)]
        return command, env
    return granian_command(API_FACTORY, port, workers, factory=True), env


@dataclass
class ServerProcess:
    """A server run as a child process group; a context manager that waits until it answers."""

    command: list[str]
    port: int
    log_path: Path
    ready_path: str = "/health"
    env: dict[str, str] | None = None
    _proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(self.env or {})},
        )
        log.close()
        self._wait_ready()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        request = f"GET {self.ready_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"server {self.command!r} exited early:\n{tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(request.encode())
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server {self.command!r} did not answer within {READY_TIMEOUT_S} s")

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        except ProcessLookupError:
            pass
