import pytest

from messenger.domain.errors import InvalidInput
from messenger.domain.pages import MAX_PAGE_SIZE, check_page_limit


@pytest.mark.parametrize("limit", [1, 50, MAX_PAGE_SIZE])
def test_a_limit_within_bounds_is_accepted(limit: int) -> None:
    assert check_page_limit(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1])
def test_a_limit_out_of_bounds_names_the_field(limit: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_page_limit(limit)
    assert raised.value.details == {"field": "limit"}
    assert str(MAX_PAGE_SIZE) in str(raised.value)


def test_a_listing_may_have_its_own_maximum() -> None:
    assert check_page_limit(500, 500) == 500
    with pytest.raises(InvalidInput):
        check_page_limit(501, 500)
