"""Generating seed rows, without a database."""

from __future__ import annotations

import random
import uuid

from messenger.storage.bulk.seed import NamePool, generate_batches
from messenger.storage.shards.ring import HashRing


def _decode(batches) -> dict[int, list[list[str]]]:
    out: dict[int, list[list[str]]] = {}
    for batch in batches:
        for shard, b in batch.items():
            lines = b.data.decode().splitlines()
            assert len(lines) == b.rows
            out.setdefault(shard, []).extend(line.split("\t") for line in lines)
    return out


def test_generated_rows_are_routed_to_the_ring_shard_of_their_id() -> None:
    ring = HashRing([0, 1, 2])
    names = NamePool(first_names=("Ada",), last_names=("Lovelace",))
    for shard, rows in _decode(generate_batches(500, ring, names, batch_size=64)).items():
        for uid, _, _ in rows:
            assert ring.shard_for(uid) == shard


def test_generates_exactly_n_unique_uuidv7_ids_across_batches() -> None:
    names = NamePool(first_names=("Ada",), last_names=("Lovelace",))
    decoded = _decode(generate_batches(1_001, HashRing([0, 1]), names, batch_size=100))
    ids = [uuid.UUID(r[0]) for rows in decoded.values() for r in rows]
    assert len(ids) == len(set(ids)) == 1_001
    assert {u.version for u in ids} == {7}


def test_names_are_combined_from_the_pool() -> None:
    names = NamePool(first_names=("Ada", "Grace"), last_names=("Lovelace", "Hopper"))
    decoded = _decode(generate_batches(200, HashRing([0]), names, rng=random.Random(3)))
    combos = {(r[1], r[2]) for r in decoded[0]}
    assert combos == {(f, last) for f in names.first_names for last in names.last_names}


def test_name_pool_escapes_copy_specials_once() -> None:
    pool = NamePool.build(size=50, seed=5)
    assert len(pool.first_names) >= 50 and len(pool.last_names) >= 50
    assert not any("\t" in n or "\n" in n for n in pool.first_names + pool.last_names)
