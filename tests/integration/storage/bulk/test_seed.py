"""Seeding against the throwaway cluster: rows land, on the right shard, counted right."""

from __future__ import annotations

import hashlib
import random

import psycopg
import pytest

from messenger.storage.bulk.distribution import measure_distribution
from messenger.storage.bulk.seed import NamePool, seed_demo_if_empty, seed_users
from messenger.storage.shards.ring import HashRing
from messenger.topology import Topology


def _ring_position(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest()[:4], "big")


def _rows(topology: Topology) -> dict[int, list[tuple[str, int]]]:
    out = {}
    for shard in topology.shards:
        with psycopg.connect(shard.primary_dsn, prepare_threshold=None) as conn:
            out[shard.index] = [
                (str(uid), int(pos))
                for uid, pos in conn.execute("SELECT id, ring_pos FROM users").fetchall()
            ]
    return out


@pytest.fixture(scope="module")
def names() -> NamePool:
    return NamePool.build(size=200, seed=1)


def test_seeding_n_users_adds_exactly_n_rows_split_as_reported(cluster, names) -> None:
    before = {s.index: s.rows for s in measure_distribution(cluster.topology)}
    result = seed_users(cluster.topology, 2_500, batch_size=700, names=names, rng=random.Random(7))
    after = {s.index: s.rows for s in measure_distribution(cluster.topology)}
    assert result.total == 2_500
    assert {i: after[i] - before[i] for i in after} == result.rows_per_shard


def test_every_seeded_row_sits_on_the_shard_the_ring_picks(cluster, names) -> None:
    seed_users(cluster.topology, 1_000, names=names)
    ring = HashRing(cluster.topology.shard_indexes)
    for shard, rows in _rows(cluster.topology).items():
        assert rows, f"shard {shard} got no rows"
        for uid, ring_pos in rows:
            assert ring.shard_for(uid) == shard
            assert ring_pos == _ring_position(uid)


def test_distribution_counts_match_the_tables_and_sum_to_one(cluster, names) -> None:
    seed_users(cluster.topology, 300, names=names)
    shares = measure_distribution(cluster.topology)
    actual = {i: len(rows) for i, rows in _rows(cluster.topology).items()}
    assert {s.index: s.rows for s in shares} == actual
    assert sum(s.share for s in shares) == pytest.approx(1.0)
    assert sum(s.predicted_share for s in shares) == pytest.approx(1.0)


def test_demo_seed_skips_a_cluster_that_already_has_users(cluster, names) -> None:
    seed_users(cluster.topology, 10, names=names)
    before = sum(s.rows for s in measure_distribution(cluster.topology))
    assert seed_demo_if_empty(cluster.topology, n=50) == 0
    assert sum(s.rows for s in measure_distribution(cluster.topology)) == before
