"""Where a local cluster keeps its files and which ports its servers listen on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("var/cluster")
DEFAULT_BASE_PORT = 5440
MAX_SHARDS = 10  # the port scheme below leaves room for ten shards per role

# Offsets from the base port; with the default base they give DESIGN.md's ports:
# primaries 5440+i, replicas 5450+i, PgBouncers 6430+i, Redis 6390.
REPLICA_OFFSET = 10
PGBOUNCER_OFFSET = 990
REDIS_OFFSET = 950

ROLES = ("primary", "replica", "pgbouncer")


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    data_dir: Path
    shards: int
    base_port: int = DEFAULT_BASE_PORT

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"a local cluster has 1 to {MAX_SHARDS} shards, not {self.shards}")
        if not 1024 <= self.base_port <= 65535 - PGBOUNCER_OFFSET - MAX_SHARDS:
            raise ValueError(f"base port {self.base_port} is out of range")

    def port(self, shard: int, role: str) -> int:
        offset = {"primary": 0, "replica": REPLICA_OFFSET, "pgbouncer": PGBOUNCER_OFFSET}[role]
        return self.base_port + offset + shard

    @property
    def redis_port(self) -> int:
        return self.base_port + REDIS_OFFSET

    def all_ports(self) -> list[int]:
        return [self.port(i, r) for i in range(self.shards) for r in ROLES] + [self.redis_port]

    def shard_dir(self, shard: int) -> Path:
        return self.data_dir / f"shard_{shard}"

    def pgdata(self, shard: int, role: str) -> Path:
        return self.shard_dir(shard) / role

    def pgbouncer_dir(self, shard: int) -> Path:
        return self.shard_dir(shard) / "pgbouncer"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "cluster.toml"

    @property
    def secrets_file(self) -> Path:
        """Signing keys (token, cursor), mode 600; beside the topology, where the API looks."""
        return self.data_dir / "secrets.toml"

    @property
    def topology_file(self) -> Path:
        return self.data_dir / "topology.toml"
