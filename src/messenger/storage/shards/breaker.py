"""A circuit breaker per (shard, role), so a dead server fails fast instead of costing a
timeout on every request, and is tried again on its own once it may be back."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed → (N consecutive failures) → open for `reset_after` seconds → half-open, where
    a single call is let through as a probe: success closes the breaker, failure reopens it.

    Not thread-safe; each worker process has its own, used from its event loop only.
    """

    __slots__ = ("_clock", "_failures", "_opened_at", "_probe_at", "_reset_after", "_threshold", "name")

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 2,
        reset_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = failure_threshold
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None
        """When the half-open probe started; a probe that never reports expires after reset_after."""

    @property
    def tripped(self) -> bool:
        """True from the failure that opened the breaker until a success closes it."""
        return self._opened_at is not None

    @property
    def is_open(self) -> bool:
        """True while calls are refused (open, or half-open with its probe in flight)."""
        return self._opened_at is not None and not self._may_probe(self._clock())

    def allow(self) -> bool:
        """Whether a call may go ahead now; in half-open state only the first caller may."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if not self._may_probe(now):
            return False
        self._probe_at = now
        return True

    def _may_probe(self, now: float) -> bool:
        assert self._opened_at is not None
        if now - self._opened_at < self._reset_after:
            return False
        return self._probe_at is None or now - self._probe_at >= self._reset_after

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_at = None

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_at = None
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()
