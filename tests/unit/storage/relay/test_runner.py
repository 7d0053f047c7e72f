from messenger.storage.relay.runner import backoff_seconds


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_seconds(50) == 60.0


def test_backoff_does_not_overflow_after_a_long_outage() -> None:
    # A shard down for a day is thousands of attempts; 2.0 ** n overflows past n = 1024.
    assert backoff_seconds(100_000) == 60.0
