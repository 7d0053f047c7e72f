"""The ring must stay byte-compatible with the Go original and with the ``ring_pos`` columns."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messenger.storage.shards.ring import RING_SIZE, HashRing, Move, ring_position
from messenger.topology import ShardConfig, Topology

FIVE = HashRing(range(5))


def naive_shard_for(ring: HashRing, key: str) -> int:
    """The DESIGN.md rule read literally: first vnode at or after the key, else the lowest."""
    position = ring_position(key)
    at_or_after = [(p, s) for p, s in ring.virtual_nodes if p >= position]
    return min(at_or_after)[1] if at_or_after else ring.virtual_nodes[0][1]


def test_ring_position_of_zero_uuid_matches_postgres_ring_pos_column() -> None:
    assert ring_position("00000000-0000-0000-0000-000000000000") == 2676607050


def test_ring_position_is_first_four_md5_bytes_big_endian() -> None:
    # md5("alice") = 6384e2b2184bcbf58eccf10ca7a6563c
    assert ring_position("alice") == 0x6384E2B2


@pytest.mark.parametrize(
    ("key", "shard"),
    [
        ("00000000-0000-0000-0000-000000000000", 0),
        ("ffffffff-ffff-ffff-ffff-ffffffffffff", 2),
        ("018f3c1e-7b2a-7c3d-8e4f-0123456789ab", 2),
        ("0193a5b2-4c1d-7e8f-9a0b-1c2d3e4f5a6b", 0),
        ("alice", 1),
        ("bob@example.com", 4),
    ],
)
def test_five_shard_ring_places_reference_keys_like_the_go_original(key: str, shard: int) -> None:
    assert FIVE.shard_for(key) == shard


def test_shard_for_uuid_hashes_canonical_lowercase_text() -> None:
    u = uuid.UUID("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF")
    assert FIVE.shard_for_uuid(u) == FIVE.shard_for(str(u)) == 2


def test_shard_for_hashes_the_key_as_given_without_lowercasing() -> None:
    upper = "018F3C1E-7B2A-7C3D-8E4F-0123456789AB"
    assert ring_position(upper) != ring_position(upper.lower())
    assert FIVE.shard_for(upper) == FIVE.shard_at(ring_position(upper))


def test_five_shard_ring_lowest_and_highest_vnodes() -> None:
    vnodes = FIVE.virtual_nodes
    assert len(vnodes) == 5 * 150
    assert vnodes[0] == (912582, 0)
    assert vnodes[-1] == (4293294279, 2)


def test_vnode_labels_are_shard_index_and_vnode_number() -> None:
    vnodes = set(HashRing([3], vnodes=2).virtual_nodes)
    assert vnodes == {(ring_position("shard_3-vn0"), 3), (ring_position("shard_3-vn1"), 3)}


def test_key_exactly_at_a_vnode_belongs_to_that_vnode() -> None:
    for position, shard in FIVE.virtual_nodes[:50]:
        assert FIVE.shard_at(position) == shard


def test_position_above_highest_vnode_wraps_to_owner_of_lowest_vnode() -> None:
    highest = FIVE.virtual_nodes[-1][0]
    lowest_owner = FIVE.virtual_nodes[0][1]
    assert FIVE.shard_at(highest + 1) == lowest_owner
    assert FIVE.shard_at(RING_SIZE - 1) == lowest_owner
    assert FIVE.shard_at(0) == lowest_owner


def test_key_hashing_above_highest_vnode_wraps_to_owner_of_lowest_vnode() -> None:
    key = "wrap-3155"
    assert ring_position(key) == 4293759560 > FIVE.virtual_nodes[-1][0]
    assert FIVE.shard_for(key) == 0


@given(st.text(max_size=64))
def test_shard_for_agrees_with_the_literal_rule(key: str) -> None:
    assert FIVE.shard_for(key) == naive_shard_for(FIVE, key)


def test_five_shard_ring_shares_match_the_go_original() -> None:
    shares = {shard: round(share * 100, 2) for shard, share in FIVE.shares().items()}
    assert shares == {0: 21.74, 1: 20.30, 2: 19.57, 3: 18.62, 4: 19.78}


@pytest.mark.parametrize("shards", [[0], [0, 1], list(range(5)), [2, 5, 9]])
def test_shares_sum_to_one(shards: list[int]) -> None:
    assert sum(HashRing(shards).shares().values()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shards", [[0], list(range(5)), [2, 5, 9]])
def test_ranges_for_cover_the_ring_exactly_once_across_shards(shards: list[int]) -> None:
    ring = HashRing(shards)
    owned = sorted((start, end, shard) for shard in shards for start, end in ring.ranges_for(shard))
    assert owned[0][0] == 0
    assert owned[-1][1] == RING_SIZE
    for (_, end, _), (next_start, _, _) in itertools.pairwise(owned):
        assert end == next_start
    for start, end, shard in owned:
        assert start < end
        assert ring.shard_at(start) == shard
        assert ring.shard_at(end - 1) == shard


def test_ranges_for_sizes_add_up_to_the_shard_share() -> None:
    for shard, share in FIVE.shares().items():
        size = sum(end - start for start, end in FIVE.ranges_for(shard))
        assert size / RING_SIZE == share


def test_ranges_for_splits_the_wrap_around_range_at_the_end_of_the_ring() -> None:
    first_vnode = FIVE.virtual_nodes[0][0]
    last_vnode = FIVE.virtual_nodes[-1][0]
    ranges = FIVE.ranges_for(0)
    assert ranges[0] == (0, first_vnode + 1)
    assert ranges[-1] == (last_vnode + 1, RING_SIZE)


def test_single_shard_ring_owns_everything() -> None:
    ring = HashRing([7])
    assert ring.shard_for("anything") == 7
    assert ring.ranges_for(7) == [(0, RING_SIZE)]
    assert ring.shares() == {7: 1.0}


def test_ranges_for_unknown_shard_raises() -> None:
    with pytest.raises(ValueError):
        FIVE.ranges_for(5)


def test_adding_a_sixth_shard_moves_its_share_of_keys_all_to_it() -> None:
    six = HashRing(range(6))
    moves = FIVE.moves(six)
    assert round(FIVE.moved_fraction(six) * 100, 2) == 15.26
    assert {m.to_shard for m in moves} == {5}
    assert FIVE.moved_fraction(six) == six.shares()[5]


def test_moves_describe_exactly_the_positions_whose_owner_changes() -> None:
    six = HashRing(range(6))
    for move in FIVE.moves(six):
        assert isinstance(move, Move)
        assert move.start < move.end
        for position in (move.start, move.end - 1):
            assert FIVE.shard_at(position) == move.from_shard
            assert six.shard_at(position) == move.to_shard
    # every boundary between moves, and just outside them, keeps its owner
    moves = FIVE.moves(six)
    for before, after in itertools.pairwise(moves):
        if before.end < after.start:
            assert FIVE.shard_at(before.end) == six.shard_at(before.end)
            assert FIVE.shard_at(after.start - 1) == six.shard_at(after.start - 1)


def test_removing_a_shard_moves_only_its_keys() -> None:
    four = HashRing([0, 1, 3, 4])
    moves = FIVE.moves(four)
    assert {m.from_shard for m in moves} == {2}
    assert FIVE.moved_fraction(four) == FIVE.shares()[2]


def test_a_ring_moves_nothing_against_an_equal_ring() -> None:
    assert FIVE.moves(HashRing(range(5))) == []
    assert FIVE.moved_fraction(HashRing([4, 3, 2, 1, 0])) == 0.0


def test_shard_indexes_are_sorted_and_input_order_does_not_matter() -> None:
    ring = HashRing([4, 0, 2, 1, 3])
    assert ring.shard_indexes == (0, 1, 2, 3, 4)
    assert ring.virtual_nodes == FIVE.virtual_nodes


def test_empty_shard_list_raises() -> None:
    with pytest.raises(ValueError):
        HashRing([])


@pytest.mark.parametrize("shards", [[0, 0], [-1], [True]])
def test_invalid_shard_indexes_raise(shards: list[int]) -> None:
    with pytest.raises(ValueError):
        HashRing(shards)


def test_zero_vnodes_raises() -> None:
    with pytest.raises(ValueError):
        HashRing([0], vnodes=0)


@pytest.mark.parametrize("position", [-1, RING_SIZE])
def test_shard_at_rejects_positions_off_the_ring(position: int) -> None:
    with pytest.raises(ValueError):
        FIVE.shard_at(position)


def test_the_ring_of_a_topology_is_built_once_and_shared() -> None:
    def topology(epoch: int, shards: int) -> Topology:
        configs = tuple(ShardConfig(i, f"shard_{i}", "rw", "ro", "rw", "ro") for i in range(shards))
        return Topology(epoch=epoch, shards=configs, redis_url="redis://unused")

    ring = HashRing.for_topology(topology(1, 3))
    assert ring is HashRing.for_topology(topology(1, 3))
    assert ring.shard_indexes == (0, 1, 2)
    assert HashRing.for_topology(topology(2, 4)).shard_indexes == (0, 1, 2, 3)
