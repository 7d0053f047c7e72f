"""The error window: first to last failure relative to the injection, and who saw errors."""

from __future__ import annotations

from messenger.chaos.ledger import Outcome
from messenger.chaos.window import UNKNOWN_SHARD, error_window


def test_no_failures_give_an_empty_window() -> None:
    window = error_window([Outcome(1.0, "read", True), Outcome(2.0, "send", True)], 1.5)
    assert (window.requests, window.failed) == (2, 0)
    assert window.first_s is None and window.last_s is None and window.duration_s == 0.0


def test_the_window_runs_from_the_first_to_the_last_failure_after_injection() -> None:
    outcomes = [
        Outcome(10.0, "read", True),
        Outcome(10.4, "send", False, "shard_1", "c1", "503 shard_unavailable"),
        Outcome(11.0, "read", True),
        Outcome(16.1, "patch", False, "shard_1", "u1", "timeout"),
    ]
    window = error_window(outcomes, injected_at=10.0)
    assert (window.first_s, window.last_s) == (0.4, 6.1)
    assert round(window.duration_s, 3) == 5.7
    assert window.by_shard == {"shard_1": 2}
    assert window.by_op == {"send": 1, "patch": 1}
    assert window.by_error == {"503 shard_unavailable": 1, "timeout": 1}
    assert window.failed_keys == 2


def test_a_failure_before_the_injection_has_a_negative_offset() -> None:
    window = error_window([Outcome(9.0, "read", False, "shard_0", error="timeout")], 10.0)
    assert window.first_s == -1.0


def test_only_named_shards_outside_the_allowed_ones_are_unexpected() -> None:
    outcomes = [
        Outcome(1.0, "send", False, "shard_1", error="503"),
        Outcome(1.1, "read", False, "shard_2", error="503"),
        Outcome(1.2, "create", False, None, error="timeout"),
    ]
    window = error_window(outcomes, 0.0)
    assert window.by_shard == {"shard_1": 1, "shard_2": 1, UNKNOWN_SHARD: 1}
    assert window.unexpected_shards(["shard_1"]) == {"shard_2": 1}


def test_no_confinement_allows_errors_on_every_shard() -> None:
    window = error_window([Outcome(1.0, "send", False, "shard_2", error="503")], 0.0)
    assert window.unexpected_shards(None) == {}
