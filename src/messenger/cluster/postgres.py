"""One PostgreSQL server of the local cluster: a shard's primary or its streaming replica."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from messenger.cluster.binaries import Binaries
from messenger.cluster.service_user import ServiceUser, give_to, run_as

DATABASE = "messenger"
ROLE = "messenger"

# PostgreSQL settings for a small machine (2 cores, a few GiB to spare) that runs every
# server of the cluster at once: 2 × N servers share the cores and the page cache.
TUNING: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",  # TCP only: no socket dir to own or clash over
    # PgBouncer holds at most default_pool_size + reserve_pool_size per database, plus admin
    # sessions, replication and the migrator: 100 leaves ample room.
    "max_connections": "100",
    "shared_buffers": "128MB",  # ×10 servers, still a small part of memory
    "effective_cache_size": "1GB",
    "work_mem": "4MB",
    "maintenance_work_mem": "64MB",
    # Two cores: parallel workers only steal from concurrent queries. The background workers
    # are for logical replication: a new shard subscribes to every old one at once (one apply
    # worker each, plus up to two table-copy workers per subscription while copying).
    "max_worker_processes": "24",
    "max_parallel_workers": "0",
    "max_parallel_workers_per_gather": "0",
    "max_logical_replication_workers": "20",
    "max_sync_workers_per_subscription": "2",
    # Logical so resharding can filter publications on ring_pos (DESIGN.md). Senders and
    # slots: the streaming replica, a reshard's copy or reverse replication to every other
    # shard, and the temporary slots of table copies.
    "wal_level": "logical",
    "max_wal_senders": "24",
    "max_replication_slots": "24",
    # A replica that is gone for good must not fill the disk through its slot.
    "max_slot_wal_keep_size": "'4GB'",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_compression": "on",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "'10min'",
    "random_page_cost": "1.1",  # SSD
    "jit": "off",  # short OLTP queries never win back JIT's compile time
    "log_min_duration_statement": "1000",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_checkpoints": "off",
}

CONF_NAME = "messenger.conf"


@dataclass(frozen=True, slots=True)
class PostgresServer:
    name: str  # e.g. shard_0-primary
    pgdata: Path
    port: int
    log_file: Path
    binaries: Binaries
    user: ServiceUser

    def dsn(self, password: str, dbname: str = DATABASE) -> str:
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.initialised:
            return False
        result = run_as(self.user, [self.binaries.pg("pg_ctl"), "status", "-D", str(self.pgdata)])
        return result.returncode == 0

    def initdb(self, password: str) -> None:
        """Create the data directory (wiping a half-made one)."""
        _fresh_dir(self.pgdata, self.user)
        pwfile = self.pgdata.parent / f".{self.pgdata.name}.pw"
        pwfile.write_text(password + "\n")
        give_to(self.user, pwfile)
        try:
            result = run_as(
                self.user,
                [self.binaries.pg("initdb"), "-D", str(self.pgdata), "-U", ROLE,
                 f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
                 "--encoding=UTF8", "--no-locale", "--no-sync"],
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb for {self.name} failed:\n{result.stderr}")
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(
            "# Written by `messenger cluster up`: password logins over loopback only.\n"
            "local   all          all                  trust\n"
            "host    all          all   127.0.0.1/32   scram-sha-256\n"
            "host    replication  all   127.0.0.1/32   scram-sha-256\n"
        )
        conf = self.pgdata / "postgresql.conf"
        conf.write_text(conf.read_text() + f"\ninclude_if_exists = '{CONF_NAME}'\n")

    def configure(self, extra: dict[str, str] | None = None) -> None:
        """(Re)write the settings file this cluster owns; takes effect at the next start."""
        settings = {**TUNING, "port": str(self.port), "cluster_name": f"'{self.name}'", **(extra or {})}
        lines = ["# Written by `messenger cluster up` (see messenger/cluster/postgres.py)."]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        path = self.pgdata / CONF_NAME
        path.write_text("\n".join(lines) + "\n")
        give_to(self.user, path)
        give_to(self.user, self.pgdata / "pg_hba.conf")

    def start(self, timeout: float = 60) -> None:
        if self.is_running():
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        give_to(self.user, self.log_file)
        result = run_as(
            self.user,
            [self.binaries.pg("pg_ctl"), "start", "-D", str(self.pgdata), "-l", str(self.log_file),
             "-w", "-t", str(int(timeout))],
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.name} did not start (port {self.port}):\n{result.stderr.strip()}\n"
                f"last lines of {self.log_file}:\n{tail(self.log_file)}"
            )

    def stop(self, mode: str = "fast") -> None:
        if not self.is_running():
            return
        result = run_as(
            self.user,
            [self.binaries.pg("pg_ctl"), "stop", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60"],
        )
        if result.returncode != 0 and self.is_running():
            raise RuntimeError(f"{self.name} did not stop: {result.stderr.strip()}")

    def basebackup_from(self, primary: PostgresServer, password: str, slot: str) -> None:
        """Make this server a streaming replica of `primary`, bound to a physical slot."""
        _fresh_dir(self.pgdata, self.user)
        with psycopg.connect(primary.dsn(password), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is not None and not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            elif row is not None:
                raise RuntimeError(f"replication slot {slot} on {primary.name} is in use")
        result = run_as(
            self.user,
            [self.binaries.pg("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", ROLE, "-D", str(self.pgdata), "-R", "-X", "stream", "-C", "-S", slot,
             "--checkpoint=fast", "--no-sync"],
            env={**os.environ, "PGPASSWORD": password},
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup for {self.name} failed:\n{result.stderr}")


def _fresh_dir(path: Path, user: ServiceUser) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    give_to(user, path)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_accepting(dsn: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
