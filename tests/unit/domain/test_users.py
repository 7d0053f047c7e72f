from __future__ import annotations

import pytest

from messenger.domain.errors import InvalidInput
from messenger.domain.users import NAME_MAX_LENGTH, clean_name


def test_clean_name_trims_surrounding_whitespace() -> None:
    assert clean_name("first_name", "  Ada\t") == "Ada"


def test_clean_name_accepts_the_maximum_length_in_characters() -> None:
    name = "é" * NAME_MAX_LENGTH
    assert clean_name("first_name", name) == name


@pytest.mark.parametrize("value", ["", "   ", "x" * (NAME_MAX_LENGTH + 1), "a\x00b"])
def test_clean_name_refuses_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidInput) as error:
        clean_name("last_name", value)
    assert error.value.details == {"field": "last_name"}
