"""The ledger's bookkeeping: acknowledged and unsure writes, outcomes in time, deliveries owed."""

from __future__ import annotations

import pytest

from messenger.chaos.ledger import Ledger, LedgerError, Outcome


def test_a_patch_replaces_what_a_reread_may_show() -> None:
    ledger = Ledger()
    ledger.user_created("u1", "shard_0", ("Ada", "A"))
    ledger.user_patched("u1", ("Grace", "B"))
    assert ledger.users["u1"].names == ("Grace", "B")
    assert ledger.users["u1"].possible == {("Grace", "B")}


def test_an_unsure_patch_is_possible_beside_the_last_acknowledged_value() -> None:
    ledger = Ledger()
    ledger.user_created("u1", "shard_0", ("Ada", "A"))
    ledger.user_write_unsure("u1", ("Grace", "B"))
    assert ledger.users["u1"].names == ("Ada", "A")
    assert ledger.users["u1"].possible == {("Ada", "A"), ("Grace", "B")}


def test_a_patch_of_a_user_never_created_is_an_error() -> None:
    with pytest.raises(LedgerError, match="u9"):
        Ledger().user_patched("u9", ("Ada", "A"))


def test_writes_are_tagged_with_the_phase_under_way() -> None:
    ledger = Ledger()
    ledger.phase = "primary-kill"
    ledger.user_created("u1", "shard_1", ("Ada", "A"))
    ledger.message_sent("m1", "c1", 3, "hi", "shard_2")
    assert ledger.users["u1"].phase == "primary-kill"
    assert ledger.messages["m1"].phase == "primary-kill"


def test_a_send_acknowledged_twice_is_one_entry() -> None:
    ledger = Ledger()
    ledger.message_sent("m1", "c1", 3, "hi", "shard_2")
    ledger.message_sent("m1", "c1", 3, "hi", "shard_2")
    assert ledger.writes == 1


def test_messages_are_grouped_by_conversation_in_seq_order() -> None:
    ledger = Ledger()
    ledger.message_sent("m2", "c1", 5, "b", "shard_0")
    ledger.message_sent("m1", "c1", 4, "a", "shard_0")
    ledger.message_sent("m3", "c2", 1, "c", "shard_1")
    grouped = ledger.messages_by_conversation()
    assert [e.message_id for e in grouped["c1"]] == ["m1", "m2"]
    assert [e.message_id for e in grouped["c2"]] == ["m3"]


def test_outcomes_between_is_half_open_and_tolerates_late_arrivals() -> None:
    ledger = Ledger()
    for at in (1.0, 2.0, 4.0):
        ledger.record(Outcome(at, "read", True))
    ledger.record(Outcome(3.0, "send", False, error="timeout"))  # a slow request ending late
    assert [o.at for o in ledger.outcomes] == [1.0, 2.0, 3.0, 4.0]
    assert [o.at for o in ledger.outcomes_between(2.0, 4.0)] == [2.0, 3.0]


def test_missing_deliveries_names_each_member_socket_that_did_not_get_a_message() -> None:
    ledger = Ledger()
    ledger.message_sent("m1", "c1", 1, "a", "shard_0")
    ledger.message_sent("m2", "c1", 2, "b", "shard_0")
    ledger.delivered("alice", "m1")
    ledger.delivered("alice", "m2")
    ledger.delivered("bob", "m1")
    missing = ledger.missing_deliveries({"c1": ["alice", "bob", "carol"]}, ["alice", "bob"])
    assert missing == {"bob": ["m2"]}  # carol has no socket: she owes nothing
