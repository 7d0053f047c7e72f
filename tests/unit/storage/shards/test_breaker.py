from __future__ import annotations

from messenger.storage.shards.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(threshold: int = 2, reset_after: float = 1.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker("b", failure_threshold=threshold, reset_after=reset_after, clock=clock), clock


def test_stays_closed_below_the_failure_threshold() -> None:
    b, _ = breaker(threshold=2)
    b.record_failure()
    assert b.allow() and not b.tripped


def test_opens_after_consecutive_failures_and_refuses_calls() -> None:
    b, _ = breaker(threshold=2)
    b.record_failure()
    b.record_failure()
    assert b.tripped and b.is_open and not b.allow()


def test_a_success_resets_the_failure_count() -> None:
    b, _ = breaker(threshold=2)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.allow()


def test_half_open_lets_exactly_one_probe_through() -> None:
    b, clock = breaker(threshold=1, reset_after=1.0)
    b.record_failure()
    clock.now += 1.0
    assert b.allow()
    assert not b.allow(), "a second caller must not probe at the same time"


def test_successful_probe_closes_the_breaker() -> None:
    b, clock = breaker(threshold=1)
    b.record_failure()
    clock.now += 1.0
    assert b.allow()
    b.record_success()
    assert not b.tripped and b.allow() and b.allow()


def test_failed_probe_reopens_for_another_period() -> None:
    b, clock = breaker(threshold=3, reset_after=1.0)
    for _ in range(3):
        b.record_failure()
    clock.now += 1.0
    assert b.allow()
    b.record_failure()  # one failure is enough while open
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()


def test_a_probe_that_never_reports_expires() -> None:
    b, clock = breaker(threshold=1, reset_after=1.0)
    b.record_failure()
    clock.now += 1.0
    assert b.allow()
    clock.now += 1.0
    assert b.allow()


def test_success_recorded_by_a_health_check_closes_an_open_breaker() -> None:
    b, _ = breaker(threshold=1)
    b.record_failure()
    b.record_success()
    assert b.allow()
