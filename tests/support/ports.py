"""Free ports for throwaway clusters and servers."""

from __future__ import annotations

import random
from pathlib import Path

from messenger.cluster.daemon import port_is_free
from messenger.cluster.layout import MAX_SHARDS, PGBOUNCER_OFFSET, ClusterLayout


def _ephemeral_low(default: int = 32768) -> int:
    """Where the kernel's ports for outgoing connections start: a server port above it may be
    taken by some client's socket between the check and the bind (e.g. a shard added later)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_base_port(shards: int, attempts: int = 200) -> int:
    """A base port whose whole port block (primaries, replicas, PgBouncers, Redis) is free,
    below the ephemeral range when there is room."""
    rng = random.Random()
    top = _ephemeral_low() - PGBOUNCER_OFFSET - MAX_SHARDS
    for _ in range(attempts):
        base = rng.randrange(20000, top if top > 21000 else 50000)
        layout = ClusterLayout(data_dir=None, shards=shards, base_port=base)  # type: ignore[arg-type]
        if all(port_is_free(p) for p in layout.all_ports()):
            return base
    raise RuntimeError("no free block of ports found")


def free_port() -> int:
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 60000)
        if port_is_free(port):
            return port
