import pytest

from messenger.domain.accounts import check_password, normalize_email, normalize_username
from messenger.domain.errors import InvalidInput


@pytest.mark.parametrize("raw, expected", [("Alice", "alice"), ("  bob_99 ", "bob_99"), ("a.b", "a.b"), ("x" * 32, "x" * 32)])
def test_usernames_are_stored_lower_case(raw: str, expected: str) -> None:
    assert normalize_username(raw) == expected


@pytest.mark.parametrize("raw", ["ab", "x" * 33, "has space", "dash-ed", "émile", "", None, 42, "a@b"])
def test_bad_usernames_name_the_field(raw: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_username(raw)
    assert caught.value.details == {"field": "username"}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Bob@Example.COM", "bob@example.com"),
        (" alice+tag@mail.example.org ", "alice+tag@mail.example.org"),
        ("o'neil@x-y.io", "o'neil@x-y.io"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
    ],
)
def test_emails_are_normalised(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["plain", "a@b", "a@@b.com", "@b.com", "a@.com", "a b@c.com", "a..b@c.com", ".a@c.com",
     "a@c..com", "a@-c.com", "a@c.123", "x" * 65 + "@c.com", "a@" + "b" * 250 + ".com", None, 7],
)
def test_bad_emails_name_the_field(raw: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_email(raw)
    assert caught.value.details == {"field": "email"}


def test_password_length_is_bounded_both_ways() -> None:
    assert check_password("12345678") == "12345678"
    assert check_password("p" * 128) == "p" * 128
    for bad in ("1234567", "p" * 129, None):
        with pytest.raises(InvalidInput, match="password"):
            check_password(bad)
