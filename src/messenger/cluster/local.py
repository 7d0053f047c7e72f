"""The local cluster: N shards × (primary, streaming replica, PgBouncer) plus one Redis.

`LocalCluster.up()` is idempotent: every step checks what is already there, so running it
twice is fast, and a half-started cluster (a crash, a port that was busy) comes up on the
next run without manual clean-up.
"""

from __future__ import annotations

import resource
import secrets
import shutil
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import tomli_w

from messenger.cluster.binaries import Binaries, find_binaries
from messenger.cluster.daemon import port_holder, port_is_free
from messenger.cluster.layout import DEFAULT_BASE_PORT, DEFAULT_DATA_DIR, ClusterLayout
from messenger.cluster.pgbouncer import PgBouncerServer
from messenger.cluster.postgres import DATABASE, PostgresServer, wait_until_accepting
from messenger.cluster.redis import RedisServer
from messenger.cluster.service_user import ServiceUser, give_to, grant_traverse, service_user
from messenger.settings import write_secrets_file
from messenger.topology import ShardConfig, Topology, TopologyError, dump_topology, load_topology

DEFAULT_SHARDS = 5
Progress = Callable[[str], None]


class ClusterError(Exception):
    """The local cluster cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What `up` decided once and keeps: shape, ports and the generated password."""

    shards: int
    base_port: int
    password: str
    epoch: int = 1


def _no_progress(message: str) -> None:
    pass


class LocalCluster:
    def __init__(
        self,
        data_dir: Path | str = DEFAULT_DATA_DIR,
        *,
        shards: int | None = None,
        base_port: int | None = None,
        progress: Progress = _no_progress,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.progress = progress
        self.state = self._load_or_plan_state(shards, base_port)
        self.layout = ClusterLayout(self.data_dir, self.state.shards, self.state.base_port)
        self._binaries: Binaries | None = None
        self._user: ServiceUser | None = None

    # -- shape -----------------------------------------------------------------------------

    def _load_or_plan_state(self, shards: int | None, base_port: int | None) -> ClusterState:
        state_file = self.data_dir / "cluster.toml"
        if state_file.exists():
            raw = tomllib.loads(state_file.read_text())
            state = ClusterState(
                shards=int(raw["shards"]), base_port=int(raw["base_port"]),
                password=str(raw["password"]), epoch=int(raw.get("epoch", 1)),
            )
            if shards is not None and shards != state.shards:
                raise ClusterError(
                    f"the cluster in {self.data_dir} has {state.shards} shards, not {shards}: "
                    "destroy it first (`messenger cluster destroy`) or use another --data-dir"
                )
            if base_port is not None and base_port != state.base_port:
                raise ClusterError(
                    f"the cluster in {self.data_dir} uses base port {state.base_port}, "
                    f"not {base_port}: destroy it first or use another --data-dir"
                )
            return state
        return ClusterState(
            shards=shards or DEFAULT_SHARDS,
            base_port=base_port or DEFAULT_BASE_PORT,
            password=secrets.token_urlsafe(18),
        )

    @property
    def exists(self) -> bool:
        return self.layout.state_file.exists()

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = find_binaries()
        return self._binaries

    @property
    def user(self) -> ServiceUser:
        if self._user is None:
            self._user = service_user()
        return self._user

    def postgres(self, shard: int, role: str) -> PostgresServer:
        return PostgresServer(
            name=f"shard_{shard}-{role}",
            pgdata=self.layout.pgdata(shard, role),
            port=self.layout.port(shard, role),
            log_file=self.layout.log_file(f"shard_{shard}-{role}"),
            binaries=self.binaries,
            user=self.user,
        )

    def pgbouncer(self, shard: int) -> PgBouncerServer:
        return PgBouncerServer(
            name=f"shard_{shard}-pgbouncer",
            shard=shard,
            directory=self.layout.pgbouncer_dir(shard),
            port=self.layout.port(shard, "pgbouncer"),
            primary_port=self.layout.port(shard, "primary"),
            replica_port=self.layout.port(shard, "replica"),
            log_file=self.layout.log_file(f"shard_{shard}-pgbouncer"),
            binaries=self.binaries,
            user=self.user,
        )

    def redis(self) -> RedisServer:
        return RedisServer(
            directory=self.layout.redis_dir,
            port=self.layout.redis_port,
            log_file=self.layout.log_file("redis"),
            binaries=self.binaries,
            user=self.user,
        )

    def server(self, shard: int, role: str) -> PostgresServer | PgBouncerServer:
        return self.pgbouncer(shard) if role == "pgbouncer" else self.postgres(shard, role)

    @property
    def topology_path(self) -> Path:
        return self.layout.topology_file

    @property
    def topology(self) -> Topology:
        password = self.state.password
        shards = []
        for i in range(self.state.shards):
            bouncer = self.pgbouncer(i)
            shards.append(ShardConfig(
                index=i,
                name=f"shard_{i}",
                rw_dsn=bouncer.dsn(password, bouncer.rw_database),
                ro_dsn=bouncer.dsn(password, bouncer.ro_database),
                primary_dsn=self.postgres(i, "primary").dsn(password),
                replica_dsn=self.postgres(i, "replica").dsn(password),
            ))
        return Topology(
            epoch=self.state.epoch, shards=tuple(shards), redis_url=self.redis().url,
            path=self.topology_path,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def up(self) -> Topology:
        """Create what is missing and start what is stopped; returns the topology written."""
        binaries = self.binaries  # fail early with the package to install
        del binaries
        self._prepare_data_dir()
        _raise_open_files_limit()
        self._check_ports()
        shards = range(self.state.shards)
        with ThreadPoolExecutor(max_workers=self.state.shards + 1) as pool:
            redis_started = pool.submit(self._up_redis)
            for future in [pool.submit(self._up_shard, i) for i in shards]:
                future.result()
            redis_started.result()
        topology = self.topology
        written = self._written_topology()
        if written is not None and (
            written.epoch > topology.epoch or written.shard_indexes != topology.shard_indexes
        ):
            # A reshard published a newer ring, or is adding servers that are not in the ring
            # yet: the file, not this cluster's list of servers, is what the shards now hold.
            # Rewriting it would route keys to shards that gave them up or never had them.
            self.progress(f"keeping {self.topology_path}: epoch {written.epoch}, shards {list(written.shard_indexes)}")
            return written
        dump_topology(topology, self.topology_path)
        self.progress(f"topology written to {self.topology_path}")
        return topology

    def add_shards(self, count: int) -> tuple[ShardConfig, ...]:
        """Create and start `count` more shards' servers on the next ports (the cluster must be
        up). They join the servers, not the ring: the topology file is left as it is, for the
        resharding workflow to publish."""
        if count < 1:
            raise ClusterError(f"add at least one shard, not {count}")
        if not self.exists:
            raise ClusterError(f"no cluster in {self.data_dir}: run `messenger cluster up` first")
        first = self.state.shards
        try:
            layout = ClusterLayout(self.data_dir, first + count, self.state.base_port)
        except ValueError as exc:
            raise ClusterError(str(exc)) from None
        new = range(first, first + count)
        self._check_ports(new)
        self.state = replace(self.state, shards=first + count)
        self.layout = layout
        self._write_state()
        for shard in new:
            self._up_shard(shard)
        by_index = {s.index: s for s in self.topology.shards}
        return tuple(by_index[i] for i in new)

    def _written_topology(self) -> Topology | None:
        try:
            return load_topology(self.topology_path)
        except TopologyError:
            return None

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.layout.log_dir.mkdir(exist_ok=True)
        grant_traverse(self.user, self.data_dir)
        give_to(self.user, self.layout.log_dir)
        if not self.layout.state_file.exists():
            self._write_state()
        if write_secrets_file(self.layout.secrets_file):
            self.progress(f"signing keys generated in {self.layout.secrets_file} (mode 600)")

    def _write_state(self) -> None:
        state = self.layout.state_file
        state.write_text(tomli_w.dumps({
            "shards": self.state.shards, "base_port": self.state.base_port,
            "password": self.state.password, "epoch": self.state.epoch,
        }))
        state.chmod(0o600)

    def _check_ports(self, shards: range | None = None) -> None:
        busy = []
        for shard in shards if shards is not None else range(self.state.shards):
            for role in ("primary", "replica", "pgbouncer"):
                server = self.server(shard, role)
                if not server.is_running() and not port_is_free(server.port):
                    busy.append(f"port {server.port} ({server.name}) is in use by {port_holder(server.port)}")
        redis = self.redis()
        if not redis.is_running() and not port_is_free(redis.port):
            busy.append(f"port {redis.port} (redis) is in use by {port_holder(redis.port)}")
        if busy:
            raise ClusterError(
                "cannot start the cluster: " + "; ".join(busy)
                + ". Stop that process or choose other ports with --base-port."
            )

    def _up_shard(self, shard: int) -> None:
        primary = self.postgres(shard, "primary")
        replica = self.postgres(shard, "replica")
        ready = self.layout.shard_dir(shard)
        primary_marker = ready / ".primary-ready"
        replica_marker = ready / ".replica-ready"
        password = self.state.password

        if not primary_marker.exists():
            self.progress(f"{primary.name}: initdb")
            replica_marker.unlink(missing_ok=True)  # a new primary needs a new replica
            primary.initdb(password)
        primary.configure()
        if not primary.is_running():
            self.progress(f"{primary.name}: starting on port {primary.port}")
            primary.start()
        if not primary_marker.exists():
            with psycopg.connect(primary.dsn(password, "postgres"), autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                if not exists:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
            primary_marker.touch()

        if not replica_marker.exists():
            replica.stop(mode="immediate")
            self.progress(f"{replica.name}: pg_basebackup from {primary.name}")
            replica.basebackup_from(primary, password, slot=f"shard_{shard}_replica")
            replica_marker.touch()
        replica.configure()
        if not replica.is_running():
            self.progress(f"{replica.name}: starting on port {replica.port}")
            replica.start()

        bouncer = self.pgbouncer(shard)
        bouncer.configure(password)
        if not bouncer.is_running():
            self.progress(f"{bouncer.name}: starting on port {bouncer.port}")
            bouncer.start()

    def _up_redis(self) -> None:
        redis = self.redis()
        redis.configure()
        if not redis.is_running():
            self.progress(f"redis: starting on port {redis.port}")
            redis.start()

    def down(self) -> None:
        """Stop every server (fast shutdown), keeping the data."""
        if self.exists:
            self._stop_all(mode="fast")
            self.progress("cluster stopped")

    def destroy(self) -> None:
        """Stop everything and remove the data directory."""
        if self.exists:
            self._stop_all(mode="immediate")  # the data goes anyway: no checkpoint needed
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.progress(f"removed {self.data_dir}")

    def _stop_all(self, mode: str) -> None:
        def stop_shard(shard: int) -> None:
            self.pgbouncer(shard).stop()
            self.postgres(shard, "primary").stop(mode=mode)
            self.postgres(shard, "replica").stop(mode=mode)

        with ThreadPoolExecutor(max_workers=self.state.shards + 1) as pool:
            stops = [pool.submit(stop_shard, i) for i in range(self.state.shards)]
            stops.append(pool.submit(self.redis().stop))
            for future in stops:
                future.result()

    def stop_server(self, shard: int, role: str) -> None:
        self.server(shard, role).stop()

    def start_server(self, shard: int, role: str) -> None:
        """Start one server and return once the shard serves through its PgBouncer again:
        after a failed login PgBouncer refuses clients until its next retry succeeds."""
        server = self.server(shard, role)
        server.start()
        if isinstance(server, PostgresServer):
            wait_until_accepting(server.dsn(self.state.password))
        bouncer = self.pgbouncer(shard)
        databases = {
            "primary": [bouncer.rw_database],
            "replica": [bouncer.ro_database],
            "pgbouncer": [bouncer.rw_database, bouncer.ro_database],
        }[role]
        for database in databases:
            wait_until_accepting(bouncer.dsn(self.state.password, database))


def _raise_open_files_limit(wanted: int = 65536) -> None:
    """PgBouncer accepts up to 10,000 clients: its children inherit this process's limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), max(hard, target)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(target, hard)), hard))
