"""Conversation rules: the direct pair's id, message bodies, previews, message id order."""

from __future__ import annotations

import uuid

import pytest

from messenger.domain.conversations import (
    clean_body,
    direct_conversation_id,
    next_message_id,
    peers,
    preview,
)
from messenger.domain.errors import InvalidInput
from messenger.domain.ids import new_id


def test_direct_conversation_id_is_the_same_whoever_asks_and_differs_per_pair() -> None:
    a, b, c = new_id(), new_id(), new_id()
    assert direct_conversation_id(a, b) == direct_conversation_id(b, a)
    assert direct_conversation_id(a, b) != direct_conversation_id(a, c)
    assert direct_conversation_id(a, b).version == 8
    assert direct_conversation_id(a, b).variant == uuid.RFC_4122


@pytest.mark.parametrize("body", ["", " \n\t ", "x" * 4001, "a\x00b", "bell\x07", "del\x7f", "\ud800"])
def test_invalid_bodies_are_refused(body: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        clean_body(body)
    assert refused.value.details == {"field": "body"}


def test_a_body_is_kept_as_written() -> None:
    body = "  line one\n\tline two 😀 " + "é" * 3970
    assert clean_body(body) == body


def test_preview_is_one_line_and_bounded() -> None:
    assert preview("a\n\nb   c") == "a b c"
    assert len(preview("x" * 500) or "") == 120
    assert preview(None) is None


def test_next_message_id_never_goes_back_even_when_another_clock_was_ahead() -> None:
    earlier, later = new_id(), new_id()
    assert next_message_id(later, earlier) == later
    bumped = next_message_id(earlier, later)
    assert bumped > later and bumped.int == later.int + 1
    assert next_message_id(earlier, None) == earlier


def test_peers_pair_the_two_members_of_a_direct_conversation_only() -> None:
    a, b = new_id(), new_id()
    assert peers("direct", [a, b]) == [b, a]
    assert peers("group", [a, b]) == [None, None]
