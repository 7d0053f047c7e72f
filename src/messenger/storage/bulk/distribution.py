"""How users are spread over the shards, next to what the ring predicts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import psycopg

from messenger.storage.shards.ring import HashRing
from messenger.storage.users import COUNT_USERS
from messenger.topology import ShardConfig, Topology

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class ShardShare:
    index: int
    name: str
    rows: int
    share: float
    """Fraction of all rows held by this shard."""
    predicted_share: float
    """Fraction of the ring this shard owns: the share a uniform key stream should give it."""
    deviation_from_mean: float
    """rows / mean rows per shard - 1 (0.05 means 5 % above an even split)."""
    deviation_from_predicted: float
    """share - predicted_share, as a fraction (0.01 means one percentage point more)."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def normalised_ring_shares(ring: HashRing) -> dict[int, float]:
    """The ring's shares as fractions summing to 1, whichever scale the ring reports."""
    shares = ring.shares()
    total = sum(shares.values())
    return {i: s / total for i, s in shares.items()} if total else shares


def count_users(shard: ShardConfig) -> int:
    """Rows in one shard's users table, counted on its primary (a replica may lag)."""
    with psycopg.connect(
        shard.primary_dsn,
        connect_timeout=CONNECT_TIMEOUT_S,
        prepare_threshold=None,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        application_name="messenger-distribution",
    ) as conn:
        row = conn.execute(COUNT_USERS).fetchone()
    return int(row[0]) if row else 0


def shard_shares(topology: Topology, counts: dict[int, int]) -> list[ShardShare]:
    """Turn per-shard row counts into shares and deviations."""
    predicted = normalised_ring_shares(HashRing.for_topology(topology))
    total = sum(counts.values())
    mean = total / len(topology.shards) if topology.shards else 0.0
    out = []
    for shard in topology.shards:
        rows = counts.get(shard.index, 0)
        share = rows / total if total else 0.0
        out.append(
            ShardShare(
                index=shard.index,
                name=shard.name,
                rows=rows,
                share=share,
                predicted_share=predicted.get(shard.index, 0.0),
                deviation_from_mean=(rows / mean - 1.0) if mean else 0.0,
                deviation_from_predicted=share - predicted.get(shard.index, 0.0),
            )
        )
    return out


def measure_distribution(topology: Topology) -> list[ShardShare]:
    """Count every shard's users in parallel and compare with the ring's prediction."""
    with ThreadPoolExecutor(max_workers=len(topology.shards)) as pool:
        counts = dict(
            zip(topology.shard_indexes, pool.map(count_users, topology.shards), strict=True)
        )
    return shard_shares(topology, counts)
