"""The replica monitor's bookkeeping: reachability and lag from one probe's positions."""

from __future__ import annotations

from messenger.storage.shards.health import ReplicaState


def test_lag_in_time_is_the_age_of_the_oldest_position_not_yet_replayed() -> None:
    state = ReplicaState()
    state.record(10.0, 100, (True, 100))
    state.record(11.0, 200, (True, 100))
    state.record(12.5, 300, (True, 150))
    assert state.lag_seconds == 1.5  # the primary was at 200 at 11.0, still not replayed
    assert state.lag_bytes == 150
    assert state.primary_up and state.replica_up and state.checked_at == 12.5


def test_a_replica_that_replayed_everything_has_no_lag() -> None:
    state = ReplicaState()
    state.record(1.0, 100, (True, 50))
    state.record(2.0, 120, (True, 120))
    assert (state.lag_seconds, state.lag_bytes) == (0.0, 0)
    assert not state.samples


def test_without_the_primary_the_lag_is_unknown_and_the_samples_are_dropped() -> None:
    state = ReplicaState()
    state.record(1.0, 100, (True, 50))
    state.record(2.0, None, (True, 60))
    assert not state.primary_up and state.replica_up
    assert state.lag_seconds is None and state.lag_bytes is None
    assert not state.samples


def test_a_replica_that_does_not_answer_has_no_lag_figure() -> None:
    state = ReplicaState()
    state.record(1.0, 100, (True, 100))
    state.record(2.0, 200, None)
    assert state.primary_up and not state.replica_up
    assert state.lag_seconds is None and state.lag_bytes is None


def test_a_server_not_in_recovery_counts_as_caught_up() -> None:
    state = ReplicaState()
    state.record(1.0, 100, (True, 10))
    state.record(2.0, 200, (False, None))
    assert (state.lag_seconds, state.lag_bytes) == (0.0, 0)
    assert not state.samples
