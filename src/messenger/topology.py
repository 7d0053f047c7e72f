"""The topology file: which shards exist and how to reach them.

Everything that talks to the shards (API, migrations, seeding, benchmarks) reads them from
here, so the same code runs against a local cluster that `messenger cluster up` started or
against remote servers described by hand. The ring is built from the shard indexes; the epoch
changes whenever the set of shards does.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

DEFAULT_TOPOLOGY_PATH = Path("var/cluster/topology.toml")
TOPOLOGY_ENV = "MESSENGER_TOPOLOGY"
PGBOUNCER_POOL_SIZE = 10
"""Server connections each shard's PgBouncer keeps per (database, user) pair, unless
MESSENGER_PGBOUNCER_POOL_SIZE says otherwise: the API sizes its pools to stay within it. Two
cores saturate long before 10 busy backends per server; more only adds context switches and
lock contention. Clients beyond that queue inside PgBouncer (up to max_client_conn)."""


class TopologyError(Exception):
    """The topology file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class ShardConfig:
    index: int
    name: str
    rw_dsn: str
    """Writes: the shard's primary, through PgBouncer (transaction pooling)."""
    ro_dsn: str
    """Reads: the shard's replica, through PgBouncer."""
    primary_dsn: str
    """Direct to the primary, for admin work (migrations, COPY, replication status)."""
    replica_dsn: str
    """Direct to the replica, for admin work."""


@dataclass(frozen=True, slots=True)
class Topology:
    epoch: int
    shards: tuple[ShardConfig, ...]
    redis_url: str
    path: Path | None = field(default=None, compare=False)

    def shard(self, index: int) -> ShardConfig:
        for shard in self.shards:
            if shard.index == index:
                return shard
        raise KeyError(f"no shard with index {index} in the topology")

    @property
    def shard_indexes(self) -> tuple[int, ...]:
        return tuple(s.index for s in self.shards)


def topology_path(explicit: str | Path | None = None) -> Path:
    """The topology file to use: an explicit path, else $MESSENGER_TOPOLOGY, else the default."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get(TOPOLOGY_ENV):
        return Path(env)
    return DEFAULT_TOPOLOGY_PATH


def load_topology(path: str | Path | None = None) -> Topology:
    file = topology_path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise TopologyError(
            f"topology file {file} not found: start a local cluster with `messenger cluster up`, "
            f"or name a file with --topology / ${TOPOLOGY_ENV}"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopologyError(f"cannot read topology file {file}: {exc}") from None
    try:
        shards = tuple(
            ShardConfig(
                index=int(s["index"]),
                name=str(s.get("name", f"shard_{s['index']}")),
                rw_dsn=str(s["rw_dsn"]),
                ro_dsn=str(s.get("ro_dsn") or s["rw_dsn"]),
                primary_dsn=str(s.get("primary_dsn") or s["rw_dsn"]),
                replica_dsn=str(s.get("replica_dsn") or s.get("ro_dsn") or s["rw_dsn"]),
            )
            for s in raw["shards"]
        )
        topology = Topology(
            epoch=int(raw.get("epoch", 1)),
            shards=tuple(sorted(shards, key=lambda s: s.index)),
            redis_url=str(raw.get("redis", {}).get("url", "redis://127.0.0.1:6390/0")),
            path=file,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TopologyError(f"topology file {file} is malformed: missing or bad {exc}") from None
    if not topology.shards:
        raise TopologyError(f"topology file {file} lists no shards")
    if len(set(topology.shard_indexes)) != len(topology.shards):
        raise TopologyError(f"topology file {file} lists a shard index twice")
    return topology


def dump_topology(topology: Topology, path: str | Path) -> None:
    data = {
        "epoch": topology.epoch,
        "redis": {"url": topology.redis_url},
        "shards": [
            {
                "index": s.index,
                "name": s.name,
                "rw_dsn": s.rw_dsn,
                "ro_dsn": s.ro_dsn,
                "primary_dsn": s.primary_dsn,
                "replica_dsn": s.replica_dsn,
            }
            for s in topology.shards
        ],
    }
    file = Path(path)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(
        "# Written by `messenger cluster up`. Edit by hand to point the tools at other servers.\n"
        + tomli_w.dumps(data)
    )
    tmp.chmod(0o600)
    tmp.replace(file)
