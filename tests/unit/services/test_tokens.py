import time
import uuid

import jwt
import pytest

from messenger.domain.errors import Unauthenticated
from messenger.domain.keys import KeySet, SigningKey
from messenger.services.tokens import (
    TokenSigner,
    new_refresh_token,
    refresh_token_hash,
    refresh_token_user,
)

SECRET = KeySet.single(b"k" * 32, "t1")


def test_access_token_round_trips_the_user_id() -> None:
    signer = TokenSigner(SECRET)
    user_id = uuid.uuid4()
    claims = signer.verify_access(signer.issue_access(user_id, uuid.uuid4()))
    assert claims.user_id == user_id
    assert claims.expires_at > time.time()


def test_expired_access_token_is_refused() -> None:
    signer = TokenSigner(SECRET, access_ttl_s=60)
    token = signer.issue_access(uuid.uuid4(), uuid.uuid4(), now=time.time() - 120)
    with pytest.raises(Unauthenticated, match="expired"):
        signer.verify_access(token)


def test_tampered_or_foreign_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue_access(uuid.uuid4(), uuid.uuid4())
    head, body, sig = token.split(".")
    forged = jwt.encode({"sub": str(uuid.uuid4()), "iat": 0, "exp": 2**40, "iss": "messenger", "typ": "access"}, b"x" * 32)
    for bad in (f"{head}.{body}.{sig[:-2]}AA", forged, "garbage", "", token + "x"):
        with pytest.raises(Unauthenticated):
            signer.verify_access(bad)


def test_none_algorithm_is_refused() -> None:
    unsigned = jwt.encode({"sub": str(uuid.uuid4()), "iat": 0, "exp": 2**40, "iss": "messenger", "typ": "access"}, None, algorithm="none")
    with pytest.raises(Unauthenticated):
        TokenSigner(SECRET).verify_access(unsigned)


def test_refresh_token_names_its_user_and_hashes_stably() -> None:
    user_id = uuid.uuid4()
    token = new_refresh_token(user_id)
    assert refresh_token_user(token) == user_id
    assert refresh_token_hash(token) == refresh_token_hash(token) != refresh_token_hash(new_refresh_token(user_id))


@pytest.mark.parametrize("bad", ["", "nodot", "not-a-uuid.abc", f"{uuid.uuid4()}.", "x" * 500])
def test_malformed_refresh_tokens_are_refused(bad: str) -> None:
    with pytest.raises(Unauthenticated):
        refresh_token_user(bad)


def test_the_token_header_names_the_signing_key() -> None:
    token = TokenSigner(SECRET).issue_access(uuid.uuid4(), uuid.uuid4())
    assert jwt.get_unverified_header(token)["kid"] == "t1"


def test_after_rotation_old_tokens_verify_and_new_ones_use_the_new_key() -> None:
    old = TokenSigner(SECRET)
    rotated = TokenSigner(KeySet((SigningKey("t2", b"n" * 32), *SECRET.keys)))
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    claims = rotated.verify_access(old.issue_access(user_id, session_id))
    assert (claims.user_id, claims.session_id) == (user_id, session_id)
    new = rotated.issue_access(user_id, session_id)
    assert jwt.get_unverified_header(new)["kid"] == "t2"
    with pytest.raises(Unauthenticated):  # the old key alone does not know t2
        old.verify_access(new)


def test_a_retired_key_or_a_missing_kid_is_refused() -> None:
    token = TokenSigner(SECRET).issue_access(uuid.uuid4(), uuid.uuid4())
    with pytest.raises(Unauthenticated):
        TokenSigner(KeySet.single(b"k" * 32, "t2")).verify_access(token)  # same secret, kid gone
    claims = {"sub": str(uuid.uuid4()), "sid": str(uuid.uuid4()), "iat": 0, "exp": 2**40, "iss": "messenger", "typ": "access"}
    with pytest.raises(Unauthenticated):
        TokenSigner(SECRET).verify_access(jwt.encode(claims, b"k" * 32, algorithm="HS256"))


def test_a_token_without_a_session_id_is_refused() -> None:
    claims = {"sub": str(uuid.uuid4()), "iat": 0, "exp": 2**40, "iss": "messenger", "typ": "access"}
    token = jwt.encode(claims, b"k" * 32, algorithm="HS256", headers={"kid": "t1"})
    with pytest.raises(Unauthenticated):
        TokenSigner(SECRET).verify_access(token)
