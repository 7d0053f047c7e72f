"""Response validation: what counts as a well-formed user and page."""

from __future__ import annotations

from messenger.bench.scenarios import page_problem, user_problem

UID = "0193a5b2-4c1d-7e8f-9a0b-1c2d3e4f5a6b"
LATER = "0193a5b2-4c1d-7e8f-9a0b-1c2d3e4f5a6c"


def _user(uid: str = UID, first: str = "Ada", last: str = "Lovelace") -> dict[str, str]:
    return {
        "id": uid,
        "first_name": first,
        "last_name": last,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }


def test_a_complete_user_passes() -> None:
    assert user_problem(_user(), user_id=UID, names=("Ada", "Lovelace")) is None


def test_a_user_missing_a_field_is_rejected() -> None:
    body = _user()
    del body["updated_at"]
    assert "updated_at" in (user_problem(body) or "")


def test_a_user_with_another_id_than_asked_is_rejected() -> None:
    assert user_problem(_user(), user_id=LATER) is not None


def test_a_user_with_a_non_uuid_id_is_rejected() -> None:
    assert user_problem(_user(uid="42")) is not None


def test_a_user_with_other_names_than_written_is_rejected() -> None:
    assert user_problem(_user(), names=("Grace", "Hopper")) is not None


def test_an_ordered_page_passes_and_a_disordered_one_does_not() -> None:
    ordered = {"items": [_user(UID), _user(LATER)], "next_cursor": "abc"}
    disordered = {"items": [_user(LATER), _user(UID)], "next_cursor": None}
    assert page_problem(ordered, limit=20) is None
    assert page_problem(disordered, limit=20) is not None


def test_a_page_that_repeats_the_previous_pages_last_id_is_rejected() -> None:
    assert page_problem({"items": [_user(UID)], "next_cursor": None}, limit=20, after=UID)


def test_a_page_longer_than_its_limit_is_rejected() -> None:
    assert page_problem({"items": [_user(UID), _user(LATER)], "next_cursor": None}, limit=1)
