"""The resharding load's own checks, without servers."""

from __future__ import annotations

from messenger.bench.phase import Target
from messenger.bench.reshard_analysis import MovingKeys
from messenger.bench.reshard_load import Mix, ReshardLoad


def test_a_read_older_than_the_readers_last_acknowledged_write_counts_as_stale() -> None:
    load = ReshardLoad(Target("127.0.0.1", 1), ["u"], MovingKeys([]), connections=1, rate=1.0, mix=Mix(),
                       timeout=1.0)
    load.ledger.acknowledge("u", "new")
    load._check_user("u", "new")
    assert load.stale_reads == 0
    load._check_user("u", "old")
    assert load.stale_reads == 1 and "read 'old'" in load.stale_samples[0]
    load._check_user("never-written", "anything")  # nothing acknowledged: nothing to compare
    assert load.stale_reads == 1
