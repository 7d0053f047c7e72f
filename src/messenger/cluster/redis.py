"""The cluster's Redis: pub/sub between API workers, rate limits, short-lived markers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from messenger.cluster.binaries import Binaries
from messenger.cluster.daemon import pid_from_file, prepare_files, start_daemon, terminate
from messenger.cluster.service_user import ServiceUser


@dataclass(frozen=True, slots=True)
class RedisServer:
    directory: Path
    port: int
    log_file: Path
    binaries: Binaries
    user: ServiceUser
    name: str = "redis"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def is_running(self) -> bool:
        return pid_from_file(self.pidfile) is not None

    def configure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "redis.conf").write_text(
            f"""# Written by `messenger cluster up` (see messenger/cluster/redis.py).
bind 127.0.0.1
port {self.port}
daemonize yes
pidfile {self.pidfile}
logfile {self.log_file}
dir {self.directory}
maxclients 10000
# Everything kept here is derived or short-lived (fan-out, rate limits, freshness markers):
# nothing to persist.
save ""
appendonly no
"""
        )
        prepare_files(self.user, self.directory, self.log_file)

    def start(self) -> None:
        if self.is_running():
            return
        start_daemon(self.user, [str(self.binaries.redis_server), str(self.directory / "redis.conf")], self.name, self.port)

    def stop(self) -> None:
        terminate(self.pidfile)
