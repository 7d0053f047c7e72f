"""Auditing references that cross shards: what points at nothing, what disagrees with its twin.

Like Vitess VDiff for tables, but for the application-level foreign keys this project keeps
instead of database ones (docs/follows.md). Each kind of reference is a `ReferenceCheck`
(a registry in storage/audit/checks.py; features add theirs): it scans one shard's rows in
batches, looks each batch's other ends up on their shards (one query per batch and target
shard), and yields findings; its `repair` fixes one finding if that is safe, re-reading the
truth first, so running it while traffic goes on is fine.

Findings made while the relay still has work pending may be in flight rather than wrong: the
report carries each shard's relay backlog beside them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from messenger.domain.errors import ShardUnavailable
from messenger.storage.relay.runner import DeadLetter, OutboxRelay
from messenger.storage.shards.transactions import ShardTransactions

log = logging.getLogger(__name__)

SCAN_BATCH = 1000
_UNREACHABLE = (ShardUnavailable, psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)

PROBLEMS = {
    "dangling": "points at something that does not exist",
    "missing_twin": "its twin on the other shard is missing",
    "disagrees": "its twin exists but says something else",
    "stale_copy": "a copied value differs from the original",
    "count_mismatch": "a counter differs from the rows it counts",
    "abandoned": "left behind by an interrupted operation",
}


@dataclass(frozen=True, slots=True)
class Finding:
    problem: str  # a key of PROBLEMS
    ref: dict[str, str]  # identifies the row, e.g. {"follower_id": ..., "followee_id": ...}
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Batch:
    checked: int
    findings: list[Finding]


class ReferenceCheck(Protocol):
    kind: str
    description: str

    def scan(self, shards: ShardTransactions, shard: int) -> AsyncIterator[Batch]:
        """This shard's referencing rows, checked batch by batch."""
        ...

    async def repair(self, shards: ShardTransactions, shard: int, finding: Finding) -> bool:
        """Fix one finding if that is safe; True if fixed (or found fixed already)."""
        ...


@dataclass(slots=True)
class ShardResult:
    shard: str
    checked: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    samples: list[Finding] = field(default_factory=list)
    repaired: int = 0
    error: str | None = None

    @property
    def found(self) -> int:
        return sum(self.problems.values())


@dataclass(slots=True)
class KindResult:
    kind: str
    description: str
    shards: list[ShardResult]

    @property
    def found(self) -> int:
        return sum(s.found for s in self.shards)

    @property
    def repaired(self) -> int:
        return sum(s.repaired for s in self.shards)


@dataclass(frozen=True, slots=True)
class RelayState:
    shard: str
    pending: int | None
    oldest_age_s: float | None
    dead: int | None
    dead_samples: list[DeadLetter]
    requeued: int = 0
    error: str | None = None


@dataclass(slots=True)
class AuditReport:
    kinds: list[KindResult]
    relay: list[RelayState]
    repaired: bool

    @property
    def unreachable(self) -> list[str]:
        names = {s.shard for k in self.kinds for s in k.shards if s.error}
        names |= {r.shard for r in self.relay if r.error}
        return sorted(names)

    @property
    def remaining(self) -> int:
        """Findings not repaired, plus dead letters not requeued."""
        left = sum(k.found - k.repaired for k in self.kinds)
        return left + sum((r.dead or 0) - r.requeued for r in self.relay)

    @property
    def ok(self) -> bool:
        return self.remaining == 0 and not self.unreachable

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "repair": self.repaired,
            "unreachable_shards": self.unreachable,
            "kinds": [
                {
                    "kind": k.kind, "description": k.description, "found": k.found, "repaired": k.repaired,
                    "shards": [
                        {"shard": s.shard, "checked": s.checked, "problems": dict(s.problems),
                         "repaired": s.repaired, "error": s.error,
                         "sample": [{"problem": f.problem, **f.ref, "detail": f.detail} for f in s.samples]}
                        for s in k.shards
                    ],
                }
                for k in self.kinds
            ],
            "relay": [
                {"shard": r.shard, "pending": r.pending, "oldest_pending_age_s": r.oldest_age_s,
                 "dead": r.dead, "requeued": r.requeued, "error": r.error,
                 "dead_sample": [{"id": str(d.id), "type": d.type, "attempts": d.attempts,
                                  "last_error": d.last_error} for d in r.dead_samples]}
                for r in self.relay
            ],
        }


async def audit(
    shards: ShardTransactions,
    checks: Sequence[ReferenceCheck],
    relay: OutboxRelay,
    *,
    repair: bool = False,
    sample: int = 5,
) -> AuditReport:
    """Run every check on every shard (and, with `repair`, fix what is safe as it goes).

    A shard that does not answer is reported once per kind and not scanned; the others are,
    though lookups of their rows' other ends on it fail their scan (reported as such).
    """
    down = await unreachable_shards(shards)
    kinds = []
    for check in checks:
        results = [
            ShardResult(shards.shard_name(shard), error=down[shard]) if shard in down
            else await _scan_shard(shards, check, shard, repair, sample)
            for shard in shards.shard_indexes
        ]
        kinds.append(KindResult(check.kind, check.description, results))
    return AuditReport(kinds, await relay_state(relay, repair=repair, sample=sample, down=down), repair)


async def unreachable_shards(shards: ShardTransactions) -> dict[int, str]:
    """The shards whose primary does not answer a trivial query now, with the reason."""
    down = {}
    for shard in shards.shard_indexes:
        try:
            async with shards.transaction(shard, name="audit_ping") as conn:
                await conn.execute("SELECT 1")
        except _UNREACHABLE as exc:
            down[shard] = _describe(exc)
    return down


def _describe(exc: BaseException) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


async def _scan_shard(
    shards: ShardTransactions, check: ReferenceCheck, shard: int, repair: bool, sample: int
) -> ShardResult:
    result = ShardResult(shards.shard_name(shard))
    try:
        async for batch in check.scan(shards, shard):
            result.checked += batch.checked
            for finding in batch.findings:
                result.problems[finding.problem] += 1
                if len(result.samples) < sample:
                    result.samples.append(finding)
                if repair and await check.repair(shards, shard, finding):
                    result.repaired += 1
    except _UNREACHABLE as exc:
        result.error = f"a lookup failed: {_describe(exc)}"
        log.warning("audit %s on %s: %s", check.kind, result.shard, result.error)
    return result


async def relay_state(
    relay: OutboxRelay, *, repair: bool = False, sample: int = 5, down: dict[int, str] | None = None
) -> list[RelayState]:
    """Each shard's relay backlog and dead letters; with `repair`, dead letters are requeued
    (every handler is idempotent, so a retry is always safe)."""
    states = []
    for shard in relay.shards.shard_indexes:
        name = relay.shards.shard_name(shard)
        if down and shard in down:
            states.append(RelayState(name, None, None, None, [], error=down[shard]))
            continue
        try:
            backlog = await relay.shard_backlog(shard)
            dead = await relay.dead_letters(shard, sample)
            requeued = await relay.requeue_dead(shard) if repair else 0
        except _UNREACHABLE as exc:
            states.append(RelayState(name, None, None, None, [], error=_describe(exc)))
            continue
        states.append(RelayState(name, backlog.pending, backlog.oldest_age_s, backlog.dead, dead, requeued))
    return states
