"""The run's settings: quick and full defaults, and bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from messenger.chaos.runner import ChaosConfig


def test_quick_has_a_short_outage_and_the_full_run_the_issue_s_six_minutes() -> None:
    quick = ChaosConfig.for_run(quick=True, faults=("replica-kill",), outage_s=None, out_root=Path("x"))
    full = ChaosConfig.for_run(quick=False, faults=("replica-kill",), outage_s=None, out_root=Path("x"))
    assert quick.outage_s == 20.0 and quick.hold_s < full.hold_s
    assert full.outage_s == 360.0
    assert full.max_total_s > full.outage_s  # the bound leaves room for the outage itself


def test_an_explicit_outage_wins_over_the_default() -> None:
    config = ChaosConfig.for_run(quick=False, faults=("primary-outage",), outage_s=90, out_root=Path("x"))
    assert config.outage_s == 90


def test_a_faulted_shard_outside_the_cluster_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shard 3 is not one of 0\.\.2"):
        ChaosConfig(shards=3, shard=3)


def test_a_non_positive_outage_is_refused() -> None:
    with pytest.raises(ValueError, match="outage"):
        ChaosConfig(outage_s=0)
