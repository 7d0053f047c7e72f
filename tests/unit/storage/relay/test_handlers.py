"""Which users rows the relay's read-cache invalidation names after an event."""

from __future__ import annotations

import uuid

from messenger.domain.events import OutboxEvent
from messenger.storage.relay.handlers import MAX_NAMED_USERS, users_rows_changed
from messenger.storage.relay.runner import Applied


def event(type_: str, **payload: str) -> OutboxEvent:
    return OutboxEvent(uuid.uuid4(), "user:x", type_, payload)


def test_a_deletion_names_the_users_whose_counters_its_handler_changed() -> None:
    counted = frozenset({uuid.uuid4(), uuid.uuid4()})
    deleted = event("user.deleted", user_id=str(uuid.uuid4()))
    assert set(users_rows_changed(deleted, Applied(counted)) or ()) == counted


def test_a_deletion_that_changed_no_counter_names_nobody() -> None:
    assert users_rows_changed(event("user.deleted", user_id=str(uuid.uuid4())), Applied()) == ()


def test_a_deletion_whose_handler_said_nothing_or_too_much_may_have_changed_anyone() -> None:
    deleted = event("user.deleted", user_id=str(uuid.uuid4()))
    assert users_rows_changed(deleted, None) is None
    many = frozenset(uuid.uuid4() for _ in range(MAX_NAMED_USERS + 1))
    assert users_rows_changed(deleted, Applied(many)) is None


def test_a_follow_names_both_ends_and_a_rename_nobody() -> None:
    follower, followee = uuid.uuid4(), uuid.uuid4()
    follow = event("follow.created", follower_id=str(follower), followee_id=str(followee))
    assert users_rows_changed(follow) == (follower, followee)
    assert users_rows_changed(event("user.renamed", user_id=str(follower))) == ()


def test_a_retried_deletion_may_have_changed_users_an_earlier_attempt_never_reported() -> None:
    """The clean-up commits in batches: an attempt that failed after some of them reported
    nothing, so the retry's own list can miss users whose counters already changed."""
    retried = OutboxEvent(uuid.uuid4(), "user:x", "user.deleted", {"user_id": str(uuid.uuid4())}, attempts=1)
    assert users_rows_changed(retried, Applied(frozenset({uuid.uuid4()}))) is None
