"""A shard's PgBouncer: transaction pooling in front of its primary (rw) and replica (ro)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from messenger.cluster.binaries import Binaries
from messenger.cluster.daemon import pid_from_file, prepare_files, start_daemon, terminate
from messenger.cluster.postgres import DATABASE, ROLE
from messenger.cluster.service_user import ServiceUser
from messenger.topology import PGBOUNCER_POOL_SIZE

DEFAULT_POOL_SIZE = PGBOUNCER_POOL_SIZE  # why 10: see topology.py
RESERVE_POOL_SIZE = 5
MAX_CLIENT_CONN = 10000


@dataclass(frozen=True, slots=True)
class PgBouncerServer:
    name: str  # e.g. shard_0-pgbouncer
    shard: int
    directory: Path
    port: int
    primary_port: int
    replica_port: int
    log_file: Path
    binaries: Binaries
    user: ServiceUser

    @property
    def pidfile(self) -> Path:
        return self.directory / "pgbouncer.pid"

    @property
    def rw_database(self) -> str:
        return f"shard_{self.shard}_rw"

    @property
    def ro_database(self) -> str:
        return f"shard_{self.shard}_ro"

    def dsn(self, password: str, database: str) -> str:
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        return pid_from_file(self.pidfile) is not None

    def configure(self, password: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # PgBouncer can log in to the servers with SCRAM only when it knows the plain password,
        # so the auth file (mode 600, the service user's) holds it.
        (self.directory / "userlist.txt").write_text(f'"{ROLE}" "{password}"\n')
        (self.directory / "userlist.txt").chmod(0o600)
        (self.directory / "pgbouncer.ini").write_text(
            f"""; Written by `messenger cluster up` (see messenger/cluster/pgbouncer.py).
[databases]
{self.rw_database} = host=127.0.0.1 port={self.primary_port} dbname={DATABASE}
{self.ro_database} = host=127.0.0.1 port={self.replica_port} dbname={DATABASE}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.directory / "userlist.txt"}
admin_users = {ROLE}
stats_users = {ROLE}
pool_mode = transaction
max_client_conn = {MAX_CLIENT_CONN}
default_pool_size = {DEFAULT_POOL_SIZE}
reserve_pool_size = {RESERVE_POOL_SIZE}
reserve_pool_timeout = 1
; A server that is down must fail clients fast, not park them for minutes.
server_connect_timeout = 2
server_login_retry = 1
query_wait_timeout = 10
server_lifetime = 3600
server_idle_timeout = 300
ignore_startup_parameters = extra_float_digits
logfile = {self.log_file}
pidfile = {self.pidfile}
log_connections = 0
log_disconnections = 0
"""
        )
        prepare_files(self.user, self.directory, self.log_file)

    def start(self) -> None:
        if self.is_running():
            return
        start_daemon(self.user, [str(self.binaries.pgbouncer), "-d", str(self.directory / "pgbouncer.ini")], self.name, self.port)

    def stop(self) -> None:
        # SIGINT would wait for clients to leave; a local cluster wants it gone now.
        terminate(self.pidfile, signal.SIGTERM)

