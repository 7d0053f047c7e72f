import time
import uuid

import jwt
import pytest

from messenger.domain.errors import Unauthenticated
from messenger.services.tokens import (
    TokenSigner,
    new_refresh_token,
    refresh_token_hash,
    refresh_token_user,
)

SECRET = b"k" * 32


def test_access_token_round_trips_the_user_id() -> None:
    signer = TokenSigner(SECRET)
    user_id = uuid.uuid4()
    claims = signer.verify_access(signer.issue_access(user_id))
    assert claims.user_id == user_id
    assert claims.expires_at > time.time()


def test_expired_access_token_is_refused() -> None:
    signer = TokenSigner(SECRET, access_ttl_s=60)
    token = signer.issue_access(uuid.uuid4(), now=time.time() - 120)
    with pytest.raises(Unauthenticated, match="expired"):
        signer.verify_access(token)


def test_tampered_or_foreign_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue_access(uuid.uuid4())
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
