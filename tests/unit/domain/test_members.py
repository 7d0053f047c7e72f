"""Member rules, checked on the locked conversation: who may add or remove whom, and limits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from messenger.domain.conversations import (
    Conversation,
    ConversationType,
    LockedConversation,
    check_may_remove,
    members_to_add,
    require_member,
)
from messenger.domain.errors import Conflict, Forbidden, NotFound
from messenger.domain.ids import new_id


def locked(
    type_: ConversationType = "group", role: str | None = "admin", members: list[uuid.UUID] | None = None
) -> LockedConversation:
    people = members if members is not None else [new_id(), new_id()]
    conversation = Conversation(
        new_id(), type_, "t" if type_ == "group" else None, people[0], datetime.now(UTC),
        len(people), 3, 0, None, None,
    )
    return LockedConversation(conversation, role, people)


def test_an_outsider_and_a_missing_conversation_get_the_same_not_found() -> None:
    conversation_id = new_id()
    for state in (None, locked(role=None)):
        with pytest.raises(NotFound) as refused:
            require_member(state, conversation_id)
        assert refused.value.details == {"id": str(conversation_id)}


def test_a_member_gets_the_locked_conversation_back() -> None:
    state = locked(role="member")
    assert require_member(state, state.conversation.id) is state


def test_only_admins_add_members() -> None:
    with pytest.raises(Forbidden, match="only a group's admins may add members"):
        members_to_add(locked(role="member"), [new_id()], 10)


def test_a_direct_conversations_members_never_change() -> None:
    direct = locked("direct")
    with pytest.raises(Conflict, match="direct"):
        members_to_add(direct, [new_id()], 10)
    with pytest.raises(Conflict, match="direct"):
        check_may_remove(direct, direct.members[0], direct.members[0])


def test_an_add_brings_in_the_new_users_once_in_the_order_given() -> None:
    state = locked()
    present = state.members[1]
    a, b = new_id(), new_id()
    assert members_to_add(state, [b, present, a, b], 10) == [b, a]


def test_an_add_of_members_already_in_is_nothing_to_do_even_at_the_limit() -> None:
    state = locked()
    assert members_to_add(state, list(state.members), len(state.members)) == []


def test_an_add_past_the_member_limit_is_refused_with_the_numbers() -> None:
    state = locked()
    assert members_to_add(state, [new_id()], 3) != []
    with pytest.raises(Conflict, match="at most 3 members") as refused:
        members_to_add(state, [new_id(), new_id()], 3)
    assert refused.value.details == {"limit": 3, "members": 2}


def test_a_member_may_leave_but_only_admins_remove_others() -> None:
    state = locked(role="member")
    me, other = state.members
    check_may_remove(state, me, me)
    with pytest.raises(Forbidden, match="only a group's admins may remove other members"):
        check_may_remove(state, me, other)
    admin = locked(role="admin")
    check_may_remove(admin, admin.members[0], admin.members[1])


def test_removing_someone_who_is_not_a_member_is_not_found() -> None:
    state = locked()
    stranger = new_id()
    with pytest.raises(NotFound) as refused:
        check_may_remove(state, state.members[0], stranger)
    assert refused.value.details == {"user_id": str(stranger)}
