from __future__ import annotations

import itertools
import os
import pickle
import time
import uuid

import pytest

from messenger.domain.errors import InvalidInput
from messenger.domain.ids import id_timestamp_ms, new_id, parse_id


def test_new_id_is_a_standard_library_uuid_version_7() -> None:
    u = new_id()
    assert type(u) is uuid.UUID
    assert u.version == 7
    assert u.variant == uuid.RFC_4122


def test_new_id_behaves_like_a_uuid_built_from_its_text() -> None:
    u = new_id()
    twin = uuid.UUID(str(u))
    assert u == twin
    assert hash(u) == hash(twin)
    assert u.is_safe is twin.is_safe
    assert pickle.loads(pickle.dumps(u)) == u
    assert str(u) == str(u).lower()


def test_ids_generated_in_sequence_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(100_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_ids_generated_within_one_millisecond_are_still_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]
    by_ms: dict[int, list[uuid.UUID]] = {}
    for u in ids:
        by_ms.setdefault(id_timestamp_ms(u), []).append(u)
    crowded = max(by_ms.values(), key=len)
    assert len(crowded) > 1, "machine too slow to make two ids in one millisecond"
    assert crowded == sorted(crowded)
    assert len(set(crowded)) == len(crowded)


def test_id_timestamp_is_creation_time_in_unix_ms() -> None:
    before = time.time_ns() // 1_000_000
    u = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= id_timestamp_ms(u) <= after


def test_id_timestamp_rejects_non_v7_uuids() -> None:
    with pytest.raises(ValueError):
        id_timestamp_ms(uuid.uuid4())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_worker_does_not_repeat_the_parent_ids() -> None:
    # Prefork workers fork after import: the id generator's RNG must be reseeded in the child.
    # The low 32 bits of a uuid-utils v7 are fresh random bits for every id.
    new_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_end)
            os.write(write_end, "\n".join(str(new_id()) for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent_tails = {new_id().int & 0xFFFF_FFFF for _ in range(100)}
    with os.fdopen(read_end, "rb") as pipe:
        child_ids = [uuid.UUID(line) for line in pipe.read().decode().split()]
    os.waitpid(pid, 0)
    assert len(child_ids) == 100
    assert parent_tails.isdisjoint(u.int & 0xFFFF_FFFF for u in child_ids)


@pytest.mark.parametrize(
    "text",
    [
        "018f3c1e-7b2a-7c3d-8e4f-0123456789ab",
        "018F3C1E-7B2A-7C3D-8E4F-0123456789AB",
        "018f3c1E-7B2a-7c3d-8E4F-0123456789aB",
    ],
)
def test_parse_id_accepts_canonical_text_in_any_case_and_normalises_it(text: str) -> None:
    u = parse_id(text)
    assert type(u) is uuid.UUID
    assert u == uuid.UUID(text)
    assert str(u) == "018f3c1e-7b2a-7c3d-8e4f-0123456789ab"


def test_parse_id_round_trips_new_ids() -> None:
    u = new_id()
    assert parse_id(str(u)) == u


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-uuid",
        "{018f3c1e-7b2a-7c3d-8e4f-0123456789ab}",
        "urn:uuid:018f3c1e-7b2a-7c3d-8e4f-0123456789ab",
        "018f3c1e7b2a7c3d8e4f0123456789ab",
        "018f3c1e-7b2a-7c3d-8e4f-0123456789ab0",
        "018f3c1e-7b2a-7c3d-8e4f-0123456789a",
        "018f3c1e-7b2a-7c3d-8e4f-0123456789ab\n",
        " 018f3c1e-7b2a-7c3d-8e4f-0123456789ab",
        "018f3c1e-7b2a-7c3d-8e4f-0123456789ag",
        "018f3c1e-7b2a-7c3d-8e4f-01234567_9ab",
        "018f3c1e-7b2a-7c3d-8e4f+0123456789ab",
        "018f3c1e-7b2a-7c3d-8e4f-0123456789\u0661\u0662",  # Arabic-Indic digits
        "018f3c1e-7b2a-7c3d-8e4f-0123456789ab" * 100,
    ],
)
def test_parse_id_rejects_anything_but_canonical_text(text: str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        parse_id(text)
    assert excinfo.value.details == {"field": "id"}


@pytest.mark.parametrize("value", [None, 123, b"018f3c1e-7b2a-7c3d-8e4f-0123456789ab"])
def test_parse_id_rejects_non_strings_as_invalid_input(value: object) -> None:
    with pytest.raises(InvalidInput):
        parse_id(value)  # type: ignore[arg-type]


def test_parse_id_names_the_field_in_the_error() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        parse_id("nope", field="user_id")
    assert excinfo.value.details == {"field": "user_id"}
    assert "user_id" in excinfo.value.message
