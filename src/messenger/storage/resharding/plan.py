"""The plan of a reshard: the new ring, and per (source, target) the ring ranges that move.

Pure: built from topologies and the ring alone, so `messenger shards plan` can show it before
anything is touched and every later phase works from the same ranges. The moving ranges are
exactly `old_ring.moves(new_ring)`; nothing is rehashed row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from messenger.storage.shards.ring import RING_SIZE, HashRing
from messenger.topology import ShardConfig, Topology


class PlanError(Exception):
    """The change asked for cannot be planned (unknown shard, last shard, nothing to add)."""


@dataclass(frozen=True, slots=True)
class Route:
    """The ring ranges `[lo, hi)` that `source` owns today and `target` after the reshard."""

    source: int
    target: int
    ranges: tuple[tuple[int, int], ...]

    @property
    def fraction(self) -> float:
        """The share of the whole key space this route moves."""
        return sum(hi - lo for lo, hi in self.ranges) / RING_SIZE


@dataclass(frozen=True, slots=True)
class ReshardPlan:
    kind: str
    """"add" or "remove"."""
    old: Topology
    new: Topology
    routes: tuple[Route, ...]

    @property
    def moved_fraction(self) -> float:
        return sum(route.fraction for route in self.routes)

    @property
    def joining(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.new.shard_indexes) - set(self.old.shard_indexes)))

    @property
    def leaving(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.old.shard_indexes) - set(self.new.shard_indexes)))

    def routes_from(self, source: int) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.source == source)


def next_shard_indexes(topology: Topology, count: int) -> tuple[int, ...]:
    """Indexes for `count` new shards: above every index the topology has used.

    A retired index is never reused: its ring labels would claim the ranges it owned once,
    and rows left behind on an old server would look owned again.
    """
    if count < 1:
        raise PlanError(f"the number of shards to add must be at least 1, not {count}")
    first = max(topology.shard_indexes) + 1
    return tuple(range(first, first + count))


def planned_shard(index: int) -> ShardConfig:
    """A shard that does not exist yet: enough to place it on the ring, not to reach it."""
    name = f"shard_{index}"
    return ShardConfig(index=index, name=name, rw_dsn="", ro_dsn="", primary_dsn="", replica_dsn="")


def plan_add(old: Topology, joining: tuple[ShardConfig, ...]) -> ReshardPlan:
    """The plan for `joining` shards to join `old`'s ring (epoch + 1)."""
    if not joining:
        raise PlanError("nothing to add: give at least one shard")
    taken = set(old.shard_indexes) & {s.index for s in joining}
    if taken:
        raise PlanError(f"shard index {sorted(taken)} is already in the topology")
    new = replace(old, epoch=old.epoch + 1, shards=tuple(sorted(old.shards + joining, key=lambda s: s.index)))
    return ReshardPlan("add", old, new, _routes(old, new))


def plan_remove(old: Topology, leaving: int) -> ReshardPlan:
    """The plan for shard `leaving` to drain onto the others (epoch + 1)."""
    if leaving not in old.shard_indexes:
        known = ", ".join(f"{s.index} ({s.name})" for s in old.shards)
        raise PlanError(f"there is no shard {leaving} in the topology; its shards are {known}")
    if len(old.shards) == 1:
        raise PlanError("cannot remove the last shard: its rows would have nowhere to go")
    new = replace(old, epoch=old.epoch + 1, shards=tuple(s for s in old.shards if s.index != leaving))
    return ReshardPlan("remove", old, new, _routes(old, new))


def _routes(old: Topology, new: Topology) -> tuple[Route, ...]:
    grouped: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for move in HashRing.for_topology(old).moves(HashRing.for_topology(new)):
        grouped.setdefault((move.from_shard, move.to_shard), []).append((move.start, move.end))
    return tuple(Route(s, t, tuple(ranges)) for (s, t), ranges in sorted(grouped.items()))
