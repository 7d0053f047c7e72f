from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messenger.domain.errors import InvalidInput
from messenger.domain.keys import KeySet, SigningKey
from messenger.services.cursor import MAX_TOKEN_LENGTH, CursorCodec

SECRET = KeySet.single(b"cursor-test-secret-0123456789abcdef", "c1")
PAYLOAD: dict[str, str | int] = {"v": 1, "o": "asc", "id": "018f3c1e-7b2a-7c3d-8e4f-0123456789ab"}

codec = CursorCodec(SECRET)


def assert_invalid_cursor(token: object) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        codec.decode(token)  # type: ignore[arg-type]
    assert excinfo.value.message == "invalid cursor"
    assert excinfo.value.details == {"field": "cursor"}


def test_decode_returns_what_encode_was_given() -> None:
    assert codec.decode(codec.encode(PAYLOAD)) == PAYLOAD


def test_token_is_unpadded_base64url() -> None:
    token = codec.encode(PAYLOAD)
    assert "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_token_is_compact() -> None:
    # JSON of the payload plus a 16-byte tag, base64url: about 100 characters.
    assert len(codec.encode(PAYLOAD)) < 110


def test_encoding_is_deterministic() -> None:
    assert codec.encode(PAYLOAD) == CursorCodec(SECRET).encode(dict(PAYLOAD))


@pytest.mark.parametrize("index", range(0, 100, 7))
def test_token_with_one_character_changed_is_rejected(index: int) -> None:
    token = codec.encode(PAYLOAD)
    changed = "A" if token[index] != "A" else "B"
    assert_invalid_cursor(token[:index] + changed + token[index + 1 :])


def test_token_with_last_character_changed_is_rejected() -> None:
    # The last character carries unused low bits: a change there must still be caught.
    token = codec.encode(PAYLOAD)
    for replacement in "AQgwBCDE":
        if replacement != token[-1]:
            assert_invalid_cursor(token[:-1] + replacement)


def test_token_with_one_payload_bit_flipped_is_rejected() -> None:
    raw = bytearray(base64.urlsafe_b64decode(codec.encode(PAYLOAD) + "=="))
    raw[5] ^= 0x01
    assert_invalid_cursor(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode())


def test_forged_payload_with_reused_tag_is_rejected() -> None:
    raw = base64.urlsafe_b64decode(codec.encode(PAYLOAD) + "==")
    forged = raw[:-16].replace(b'"asc"', b'"dsc"') + raw[-16:]
    assert_invalid_cursor(base64.urlsafe_b64encode(forged).rstrip(b"=").decode())


def test_truncated_or_extended_token_is_rejected() -> None:
    token = codec.encode(PAYLOAD)
    assert_invalid_cursor(token[:-1])
    assert_invalid_cursor(token[:-4])
    assert_invalid_cursor(token + "A")
    assert_invalid_cursor(token + "AAAA")


def test_padded_token_is_rejected() -> None:
    token = codec.encode(PAYLOAD)
    assert_invalid_cursor(token + "=" * (-len(token) % 4 or 4))


def test_token_in_standard_base64_alphabet_is_rejected() -> None:
    token = CursorCodec(SECRET).encode({"id": "?" * 60})  # bytes that encode to '-' or '_'
    assert "-" in token or "_" in token
    assert_invalid_cursor(token.replace("-", "+").replace("_", "/"))


def test_token_made_with_another_secret_is_rejected() -> None:
    other = CursorCodec(KeySet.single(b"another-secret-0123456789abcdef!", "c1"))
    assert_invalid_cursor(other.encode(PAYLOAD))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "A",
        "AAAA",
        "not a cursor",
        "cursor!",
        "eyJ2IjoxfQ",  # an unsigned payload
        "é" * 40,
        "\x00" * 40,
        "A" * (MAX_TOKEN_LENGTH + 1),
        "A" * 1_000_000,
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    assert_invalid_cursor(token)


@pytest.mark.parametrize("token", [None, 42, b"AAAA", ["AAAA"]])
def test_non_string_tokens_are_rejected_as_invalid_input(token: object) -> None:
    assert_invalid_cursor(token)


def test_validly_signed_payload_of_the_wrong_shape_is_rejected() -> None:
    # Only a holder of the secret can make one, but decode still answers InvalidInput.
    for body in (b"[1,2]", b'{"v":true}', b'{"v":1.5}', b'{"v":null}', b"{", b'{"a":{}}'):
        signed = b"\x02c1" + body
        tag = codec._tag(b"c1", signed)
        assert_invalid_cursor(base64.urlsafe_b64encode(signed + tag).rstrip(b"=").decode())


@pytest.mark.parametrize(
    "payload",
    [{"v": True}, {"v": 1.5}, {"v": None}, {"v": [1]}, {1: "x"}],
)
def test_encode_refuses_payloads_that_would_not_decode_back(payload: dict[object, object]) -> None:
    with pytest.raises(TypeError):
        codec.encode(payload)  # type: ignore[arg-type]


def test_encode_refuses_payload_too_large_for_a_token() -> None:
    with pytest.raises(ValueError):
        codec.encode({"id": "x" * MAX_TOKEN_LENGTH})


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        CursorCodec(KeySet.single(b"short"))


payloads = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.text(max_size=40), st.integers(min_value=-(2**70), max_value=2**70)),
    max_size=4,
)


@given(payloads)
def test_any_small_payload_round_trips(payload: dict[str, str | int]) -> None:
    assert codec.decode(codec.encode(payload)) == payload


@given(st.text(max_size=MAX_TOKEN_LENGTH + 50))
def test_decode_of_arbitrary_text_raises_only_invalid_input(token: str) -> None:
    with contextlib.suppress(InvalidInput):
        codec.decode(token)


@given(payloads, st.data())
def test_any_single_character_change_to_a_token_is_rejected(
    payload: dict[str, str | int], data: st.DataObject
) -> None:
    token = codec.encode(payload)
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. "
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[index]))
    assert_invalid_cursor(token[:index] + replacement + token[index + 1 :])


def test_after_rotation_old_cursors_decode_and_new_ones_use_the_new_key() -> None:
    rotated = CursorCodec(KeySet((SigningKey("c2", b"new-cursor-secret-0123456789abcd"), *SECRET.keys)))
    old_token = codec.encode(PAYLOAD)
    assert rotated.decode(old_token) == PAYLOAD
    new_token = rotated.encode(PAYLOAD)
    assert rotated.decode(new_token) == PAYLOAD
    assert_invalid_cursor(new_token)  # the codec without c2 refuses it


def test_a_cursor_naming_another_key_id_is_refused() -> None:
    # The same secret under another key id: the id is part of what is signed.
    renamed = CursorCodec(KeySet.single(b"cursor-test-secret-0123456789abcdef", "c9"))
    assert_invalid_cursor(renamed.encode(PAYLOAD))
