"""Choosing faults on the command line: names checked, clear errors."""

from __future__ import annotations

import pytest

from messenger.chaos.faults import FAULTS, FaultError, parse_faults


def test_no_selection_means_every_fault_in_order() -> None:
    assert parse_faults(None) == list(FAULTS)
    assert parse_faults("") == list(FAULTS)


def test_a_selection_keeps_its_order_and_ignores_spaces() -> None:
    assert parse_faults("partition, replica-kill") == ["partition", "replica-kill"]


def test_an_unknown_fault_is_named_with_the_choices() -> None:
    with pytest.raises(FaultError, match=r"unknown fault.*disk-full.*choose from"):
        parse_faults("replica-kill,disk-full")


def test_a_fault_named_twice_is_refused() -> None:
    with pytest.raises(FaultError, match="twice"):
        parse_faults("replica-kill,replica-kill")
