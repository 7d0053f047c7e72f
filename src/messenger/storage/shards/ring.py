"""The consistent-hash ring that maps a placement key to a shard index.

The ring is data layout (DESIGN.md, "Ring"): shard ``i`` owns ``vnodes`` virtual nodes labelled
``shard_{i}-vn{n}``; a label's or a key's position is the first 4 bytes, big-endian, of the MD5 of
its UTF-8 text; a key belongs to the first virtual node at or after its position, wrapping past
the highest one to the lowest. Changing any of this moves rows, so it stays byte-compatible with
the Go original and with the ``ring_pos`` generated column every sharded table carries.

Virtual node ``j`` (sorted by position) therefore owns the positions ``(p[j-1], p[j]]``, i.e. the
half-open range ``[p[j-1] + 1, p[j] + 1)``; the lowest one also owns everything above the highest.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable
from functools import lru_cache
from hashlib import md5
from typing import NamedTuple
from uuid import UUID

from messenger.topology import Topology

RING_SIZE = 1 << 32
"""Number of positions on the ring: positions are ``0 .. RING_SIZE - 1``."""

DEFAULT_VNODES = 150

_unpack_u32 = struct.Struct(">I").unpack_from


def ring_position(text: str) -> int:
    """The ring position of ``text``: the first 4 bytes of MD5(UTF-8 text) as a big-endian uint.

    Equal to PostgreSQL's ``(('x' || substr(md5(text), 1, 8))::bit(32))::bigint``, which is what
    the ``ring_pos`` generated columns store (for the zero UUID both give 2676607050).
    """
    return int(_unpack_u32(md5(text.encode()).digest())[0])


class Move(NamedTuple):
    """Positions ``[start, end)`` that belong to ``from_shard`` now and to ``to_shard`` after."""

    start: int
    end: int
    from_shard: int
    to_shard: int


class _Segment(NamedTuple):
    start: int
    end: int
    shard: int


class HashRing:
    """An immutable consistent-hash ring over the given shard indexes.

    Build it once per topology epoch and share it (``HashRing.for_topology``): construction
    hashes ``shards × vnodes`` labels, lookups are one MD5 and one binary search.

    Keys must already be canonical: lowercase UUID text (``str(uuid)``) or the lowercase
    username/email of a lookup row. The ring hashes exactly the text it is given and does not
    normalise it, because doing so on the hot path would cost every caller for the sake of a few,
    and because ``ring_pos`` in PostgreSQL hashes the stored text as-is.

    Should two virtual nodes ever land on the same position (none do for up to 300 shards), the
    one of the lower shard index keeps it; the result does not depend on input order.
    """

    __slots__ = ("_owners", "_positions", "_segments", "_shard_indexes", "_vnodes")

    def __init__(self, shard_indexes: Iterable[int], vnodes: int = DEFAULT_VNODES) -> None:
        indexes = list(shard_indexes)
        if not indexes:
            raise ValueError("a ring needs at least one shard")
        for index in indexes:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"shard indexes must be non-negative integers, got {index!r}")
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"duplicate shard indexes in {indexes!r}")
        if vnodes < 1:
            raise ValueError(f"vnodes must be at least 1, got {vnodes}")

        points = sorted(
            (ring_position(f"shard_{index}-vn{n}"), index)
            for index in indexes
            for n in range(vnodes)
        )
        positions: list[int] = []
        owners: list[int] = []
        for position, index in points:
            if positions and positions[-1] == position:
                continue  # collision: the lower shard index, sorted first, keeps the position
            positions.append(position)
            owners.append(index)
        # One extra owner so a key above the highest vnode wraps to the lowest without a modulo.
        owners.append(owners[0])

        self._positions = positions
        self._owners = owners
        self._shard_indexes = tuple(sorted(indexes))
        self._vnodes = vnodes
        self._segments = self._build_segments()

    @classmethod
    def for_topology(cls, topology: Topology) -> HashRing:
        """The ring of a topology's shards: the one place the ring of a topology is made.

        Built once per set of shards and shared by everything in the process (router,
        primary pools, seeding, reports); a new epoch with other shards gets its own.
        """
        return _ring_of(topology.shard_indexes)

    def __repr__(self) -> str:
        return f"HashRing({list(self._shard_indexes)!r}, vnodes={self._vnodes})"

    @property
    def shard_indexes(self) -> tuple[int, ...]:
        """The ring's shard indexes, ascending."""
        return self._shard_indexes

    @property
    def vnodes(self) -> int:
        """Virtual nodes per shard."""
        return self._vnodes

    @property
    def virtual_nodes(self) -> tuple[tuple[int, int], ...]:
        """Every virtual node as ``(position, shard)``, ascending by position."""
        return tuple(zip(self._positions, self._owners, strict=False))

    def shard_for(self, key: str) -> int:
        """The shard that owns ``key`` (canonical text; see the class docstring)."""
        position = _unpack_u32(md5(key.encode()).digest())[0]
        return self._owners[bisect_left(self._positions, position)]

    def shard_for_uuid(self, key: UUID) -> int:
        """The shard that owns a UUID key, hashed as its canonical lowercase text."""
        return self.shard_for(str(key))

    def shard_at(self, position: int) -> int:
        """The shard that owns a ring position, e.g. a row's stored ``ring_pos``."""
        if not 0 <= position < RING_SIZE:
            raise ValueError(f"ring position out of range: {position}")
        return self._owners[bisect_left(self._positions, position)]

    def shares(self) -> dict[int, float]:
        """The fraction of the key space each shard owns; the fractions sum to 1."""
        owned = dict.fromkeys(self._shard_indexes, 0)
        for segment in self._segments:
            owned[segment.shard] += segment.end - segment.start
        return {shard: size / RING_SIZE for shard, size in owned.items()}

    def ranges_for(self, shard: int) -> list[tuple[int, int]]:
        """The half-open position ranges ``[start, end)`` that ``shard`` owns, ascending.

        Adjacent ranges are merged. The wrap-around part is returned as two ranges, one ending at
        ``RING_SIZE`` and one starting at 0, so each maps to
        ``ring_pos >= start AND ring_pos < end``.
        """
        if shard not in self._shard_indexes:
            raise ValueError(f"shard {shard} is not on this ring {self!r}")
        return [(s.start, s.end) for s in self._segments if s.shard == shard]

    def moves(self, other: HashRing) -> list[Move]:
        """The position ranges whose owner differs between this ring and ``other``, ascending.

        ``from_shard`` is the owner on this ring, ``to_shard`` the owner on ``other``.
        """
        moves: list[Move] = []
        mine, theirs = self._segments, other._segments
        i = j = 0
        start = 0
        while start < RING_SIZE:
            a, b = mine[i], theirs[j]
            end = min(a.end, b.end)
            if a.shard != b.shard:
                last = moves[-1] if moves else None
                if last and last.end == start and last[2:] == (a.shard, b.shard):
                    moves[-1] = last._replace(end=end)
                else:
                    moves.append(Move(start, end, a.shard, b.shard))
            if a.end == end:
                i += 1
            if b.end == end:
                j += 1
            start = end
        return moves

    def moved_fraction(self, other: HashRing) -> float:
        """The fraction of the key space whose owner differs between this ring and ``other``."""
        return sum(m.end - m.start for m in self.moves(other)) / RING_SIZE

    def _build_segments(self) -> list[_Segment]:
        """The whole ring as contiguous owner segments covering ``[0, RING_SIZE)``, merged."""
        positions, owners = self._positions, self._owners
        raw = [_Segment(0, positions[0] + 1, owners[0])]
        raw += [
            _Segment(positions[j - 1] + 1, positions[j] + 1, owners[j])
            for j in range(1, len(positions))
        ]
        if positions[-1] + 1 < RING_SIZE:
            raw.append(_Segment(positions[-1] + 1, RING_SIZE, owners[0]))

        merged = [raw[0]]
        for segment in raw[1:]:
            if segment.shard == merged[-1].shard:
                merged[-1] = merged[-1]._replace(end=segment.end)
            else:
                merged.append(segment)
        return merged


@lru_cache(maxsize=16)
def _ring_of(shard_indexes: tuple[int, ...]) -> HashRing:
    # A few entries: a process sees one topology, and a handful while it is resharded.
    return HashRing(shard_indexes)
