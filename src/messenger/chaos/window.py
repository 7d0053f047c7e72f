"""The error window of a fault: from the first to the last failed request, and who saw errors.

Times are relative to the moment the fault was injected, so a window of `0.4 … 6.1 s` reads
"errors began 0.4 s after the kill and ended 6.1 s after it". A fault confined to one shard
must show errors on that shard only; errors whose shard is unknown (a timeout of a create,
whose key the server chooses) are reported as `?` and not held against the fault.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from messenger.chaos.ledger import Outcome

UNKNOWN_SHARD = "?"


@dataclass(frozen=True, slots=True)
class ErrorWindow:
    requests: int
    failed: int
    first_s: float | None
    """First failure, seconds after injection (negative: before it); None without failures."""
    last_s: float | None
    by_shard: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    by_error: dict[str, int] = field(default_factory=dict)
    failed_keys: int = 0
    """Distinct keys (user or conversation ids) that saw at least one error."""

    @property
    def duration_s(self) -> float:
        if self.first_s is None or self.last_s is None:
            return 0.0
        return self.last_s - self.first_s

    def unexpected_shards(self, allowed: Iterable[str] | None) -> dict[str, int]:
        """Named shards outside `allowed` that saw errors; `allowed=None` allows every shard."""
        if allowed is None:
            return {}
        ok = set(allowed) | {UNKNOWN_SHARD}
        return {shard: n for shard, n in self.by_shard.items() if shard not in ok}

    def to_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "first_s": self.first_s,
            "last_s": self.last_s,
            "duration_s": round(self.duration_s, 3),
            "by_shard": self.by_shard,
            "by_op": self.by_op,
            "by_error": self.by_error,
            "failed_keys": self.failed_keys,
        }


def error_window(outcomes: Iterable[Outcome], injected_at: float) -> ErrorWindow:
    requests = failed = 0
    first: float | None = None
    last: float | None = None
    shards: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    keys: set[str] = set()
    for outcome in outcomes:
        requests += 1
        if outcome.ok:
            continue
        failed += 1
        at = outcome.at - injected_at
        first = at if first is None else min(first, at)
        last = at if last is None else max(last, at)
        shards[outcome.shard or UNKNOWN_SHARD] += 1
        ops[outcome.op] += 1
        errors[outcome.error or "error"] += 1
        if outcome.key is not None:
            keys.add(outcome.key)
    return ErrorWindow(
        requests=requests, failed=failed,
        first_s=None if first is None else round(first, 3),
        last_s=None if last is None else round(last, 3),
        by_shard=dict(shards.most_common()), by_op=dict(ops.most_common()),
        by_error=dict(errors.most_common()), failed_keys=len(keys),
    )
