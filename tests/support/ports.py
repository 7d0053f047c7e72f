"""Free ports for throwaway clusters and servers."""

from __future__ import annotations

import random

from messenger.cluster.daemon import port_is_free
from messenger.cluster.layout import ClusterLayout


def free_base_port(shards: int, attempts: int = 200) -> int:
    """A base port whose whole port block (primaries, replicas, PgBouncers, Redis) is free."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 50000)
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
