from __future__ import annotations

import pytest

from messenger.storage.shards.freshness import int_to_lsn, lsn_to_int


@pytest.mark.parametrize(
    ("text", "value"),
    [("0/0", 0), ("0/304CC08", 0x304CC08), ("1/0", 1 << 32), ("FFFFFFFF/FFFFFFFF", 2**64 - 1)],
)
def test_lsn_text_round_trips(text: str, value: int) -> None:
    assert lsn_to_int(text) == value
    assert int_to_lsn(value) == text


def test_lsn_order_is_numeric_not_textual() -> None:
    assert lsn_to_int("0/A0000000") < lsn_to_int("1/10")


def test_fixed_width_hex_compares_like_the_numbers() -> None:
    """The Redis script keeps the higher position by comparing the stored text."""
    low, high = lsn_to_int("0/FFFFFFFF"), lsn_to_int("1/0")
    assert f"{low:016x}" < f"{high:016x}"
