"""Account use cases against the session cluster: uniqueness across shards, crashes, tokens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
import pytest
from redis.asyncio import Redis

from messenger.cluster.local import LocalCluster
from messenger.domain.accounts import Account
from messenger.domain.errors import (
    CommitUncertain,
    Conflict,
    InvalidInput,
    LimiterUnavailable,
    RateLimited,
    Unauthenticated,
)
from messenger.domain.keys import KeySet
from messenger.services.accounts import AccountLimits, AccountService, Registration
from messenger.services.passwords import Passwords
from messenger.services.tokens import TokenSigner
from messenger.storage.accounts import AccountStore, NewAccount
from messenger.storage.claims import Claim, ClaimStore
from messenger.storage.redis.rate_limits import Backoff, FixedWindow
from messenger.storage.relay.handlers import HANDLERS
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.shards.primaries import PrimaryPools
from tests.support.ports import free_port

PASSWORD = "s3cret-pass"
KEYS = KeySet.single(b"t" * 32)


class SimulatedCrash(BaseException):
    """Stops a registration where it stands, running no clean-up, as `kill -9` would."""


@pytest.fixture
async def pools(cluster: LocalCluster) -> AsyncIterator[PrimaryPools]:
    async with PrimaryPools(cluster.topology, max_size=20) as pools:
        yield pools


@pytest.fixture
async def redis(cluster: LocalCluster) -> AsyncIterator[Redis]:
    client = Redis.from_url(cluster.topology.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(time_cost=1, memory_cost=8 * 1024)  # fast for tests; same code path


def limits(redis: Redis, *, free: int = 3, per_client: int = 100, base_s: float = 1.0) -> AccountLimits:
    tag = uuid.uuid4().hex[:8]  # fresh keys: tests do not share buckets
    return AccountLimits(
        FixedWindow(redis, f"client-{tag}", per_client, 60, fail_closed=True),
        Backoff(redis, f"acct-{tag}", free=free, base_s=base_s, max_s=60, ttl_s=60),
        Backoff(redis, f"pw-{tag}", free=free, base_s=base_s, max_s=60, ttl_s=60),
    )


def service(
    pools: PrimaryPools, passwords: Passwords, redis: Redis | None = None, *,
    account_limits: AccountLimits | None = None, **kwargs: object,
) -> AccountService:
    if account_limits is None and redis is not None:
        account_limits = limits(redis)
    return AccountService(ClaimStore(pools), AccountStore(pools), passwords, TokenSigner(KEYS), account_limits, **kwargs)  # type: ignore[arg-type]


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def registration(username: str | None = None, email: str | None = None) -> Registration:
    username = username or unique()
    return Registration(username, email or f"{username}@example.com", PASSWORD, "Ada", "Lovelace")


async def test_register_login_me_refresh_logout(pools: PrimaryPools, passwords: Passwords) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration(username="Mixed.Case_" + uuid.uuid4().hex[:6]))
    assert profile.account.username.islower()
    tokens = await accounts.login(profile.account.username.upper(), PASSWORD, "127.0.0.1")
    assert tokens.user_id == profile.account.user_id
    assert (await accounts.me(tokens.user_id)).account.email == profile.account.email
    by_email = await accounts.login(profile.account.email.upper(), PASSWORD, "127.0.0.1")
    rotated = await accounts.refresh(by_email.refresh_token)
    assert rotated.refresh_token != by_email.refresh_token
    await accounts.logout(rotated.refresh_token)
    with pytest.raises(Unauthenticated):
        await accounts.refresh(rotated.refresh_token)


async def test_reusing_a_spent_refresh_token_revokes_its_whole_family(pools: PrimaryPools, passwords: Passwords) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    first = await accounts.login(profile.account.username, PASSWORD, "c")
    second = await accounts.refresh(first.refresh_token)
    with pytest.raises(Unauthenticated, match="already used"):
        await accounts.refresh(first.refresh_token)  # a thief replays the old one
    with pytest.raises(Unauthenticated):
        await accounts.refresh(second.refresh_token)  # ...and the family is gone


@pytest.mark.parametrize("case", ["username", "email"])
async def test_duplicates_in_any_letter_case_are_refused(pools: PrimaryPools, passwords: Passwords, case: str) -> None:
    accounts = service(pools, passwords)
    first = await accounts.register(registration())
    clash = (
        registration(username=first.account.username.upper())
        if case == "username"
        else registration(email=first.account.email.upper())
    )
    with pytest.raises(Conflict) as caught:
        await accounts.register(clash)
    assert caught.value.details == {"fields": ["username", "email"]}  # which one is not said


async def test_fifty_concurrent_registrations_of_one_username_give_exactly_one_account(
    pools: PrimaryPools, passwords: Passwords
) -> None:
    accounts = service(pools, passwords)
    username = unique("race")
    results = await asyncio.gather(
        *(accounts.register(registration(username=username, email=f"{unique()}@example.com")) for _ in range(50)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 49


async def test_claims_live_on_the_shard_of_the_value_not_the_user(pools: PrimaryPools, passwords: Passwords, cluster: LocalCluster) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    username_shard = pools.shard_for(profile.account.username)
    for shard in cluster.topology.shards:
        with psycopg.connect(shard.primary_dsn) as conn:
            row = conn.execute(
                "SELECT state FROM username_claims WHERE username = %s", (profile.account.username,)
            ).fetchone()
        assert (row is not None) == (shard.index == username_shard)
        if row is not None:
            assert row[0] == "confirmed"


def _expire_pending_claims(cluster: LocalCluster) -> None:
    for shard in cluster.topology.shards:
        with psycopg.connect(shard.primary_dsn, autocommit=True) as conn:
            for table in ("username_claims", "email_claims"):
                conn.execute(f"UPDATE {table} SET expires_at = now() - interval '1 second' WHERE state = 'pending'")


@pytest.mark.parametrize("crash_at", ["reserved_username", "reserved_email", "account_written"])
async def test_a_registration_killed_at_any_step_leaves_nothing_stuck(
    pools: PrimaryPools, passwords: Passwords, cluster: LocalCluster, crash_at: str
) -> None:
    async def crash(step: str) -> None:
        if step == crash_at:
            raise SimulatedCrash(step)

    request = registration()
    with pytest.raises(SimulatedCrash):
        await service(pools, passwords, step=crash).register(request)
    _expire_pending_claims(cluster)
    await ClaimStore(pools).sweep()

    accounts = service(pools, passwords)
    if crash_at == "account_written":
        # The account was written: it keeps its name and can sign in.
        tokens = await accounts.login(request.username, PASSWORD, "c")
        assert (await accounts.me(tokens.user_id)).account.username == request.username
        with pytest.raises(Conflict):
            await accounts.register(registration(username=request.username))
    else:
        # No account: the name is free again.
        with pytest.raises(Unauthenticated):
            await accounts.login(request.username, PASSWORD, "c")
        await accounts.register(registration(username=request.username, email=request.email))


async def test_an_expired_claim_is_settled_inline_by_the_next_registration(
    pools: PrimaryPools, passwords: Passwords, cluster: LocalCluster
) -> None:
    async def crash(step: str) -> None:
        if step == "reserved_email":
            raise SimulatedCrash(step)

    request = registration()
    with pytest.raises(SimulatedCrash):
        await service(pools, passwords, step=crash).register(request)
    with pytest.raises(Conflict):  # still pending and not expired: taken for now
        await service(pools, passwords).register(registration(username=request.username))
    _expire_pending_claims(cluster)
    await service(pools, passwords).register(registration(username=request.username))  # no sweeper needed


class CommitReplyLost(AccountStore):
    """Writes that commit and then fail as if the COMMIT's reply had been lost (or the position
    read after it had failed): the rows are there, the caller sees a 503 (the router's side of
    this is tests/integration/storage/shards/test_router.py)."""

    async def create(self, new: NewAccount) -> tuple[Account, datetime]:
        await super().create(new)
        raise CommitUncertain("shard_x", "simulated: the COMMIT reply was lost")

    async def change_login(self, user_id: uuid.UUID, username: str, email: str, reservation_id: uuid.UUID) -> tuple[str, str]:
        await super().change_login(user_id, username, email, reservation_id)
        raise CommitUncertain("shard_x", "simulated: the COMMIT reply was lost")


def _claim_states(cluster: LocalCluster, kind: str, value: str) -> list[str]:
    states = []
    for shard in cluster.topology.shards:
        with psycopg.connect(shard.primary_dsn) as conn:
            states += [r[0] for r in conn.execute(f"SELECT state FROM {kind}_claims WHERE {kind} = %s", (value,))]
    return states


async def test_a_registration_whose_commit_may_have_succeeded_keeps_its_names(
    pools: PrimaryPools, passwords: Passwords, cluster: LocalCluster
) -> None:
    uncertain = AccountService(
        ClaimStore(pools), CommitReplyLost(pools), passwords,
        TokenSigner(KEYS),
    )
    request = registration()
    with pytest.raises(CommitUncertain):
        await uncertain.register(request)
    # The account exists, so its names stay held: nobody registers them on another shard
    # (pending, or already confirmed by a relay of another test, since the commit succeeded).
    assert _claim_states(cluster, "username", request.username) in (["pending"], ["confirmed"])
    accounts = service(pools, passwords)
    with pytest.raises(Conflict):
        await accounts.register(registration(username=request.username))
    with pytest.raises(Conflict):
        await accounts.register(registration(email=request.email))
    # The sweeper settles them by the account, which holds them: confirmed, and it signs in.
    _expire_pending_claims(cluster)
    await ClaimStore(pools).sweep()
    assert _claim_states(cluster, "username", request.username) == ["confirmed"]
    assert _claim_states(cluster, "email", request.email) == ["confirmed"]
    await accounts.login(request.username, PASSWORD, "c")


async def test_a_login_change_whose_commit_may_have_succeeded_keeps_the_new_name(
    pools: PrimaryPools, passwords: Passwords, cluster: LocalCluster
) -> None:
    profile = await service(pools, passwords).register(registration())
    uncertain = AccountService(
        ClaimStore(pools), CommitReplyLost(pools), passwords,
        TokenSigner(KEYS),
    )
    new = unique("moved")
    with pytest.raises(CommitUncertain):
        await uncertain.update_me(profile.account.user_id, username=new)
    # Held, not released: pending, or already confirmed by a relay of another test's session
    # (the commit did succeed, so its login_changed event is in the outbox).
    assert _claim_states(cluster, "username", new) in (["pending"], ["confirmed"])
    with pytest.raises(Conflict):
        await service(pools, passwords).register(registration(username=new))


async def test_the_sweeper_never_deletes_a_confirmed_claim(pools: PrimaryPools, passwords: Passwords, cluster: LocalCluster) -> None:
    # A claim confirmed (by the relay) between the sweeper's look at the account and its delete.
    profile = await service(pools, passwords).register(registration())
    claims = ClaimStore(pools)
    username = profile.account.username
    shard = cluster.topology.shard(pools.shard_for(username))
    with psycopg.connect(shard.primary_dsn) as conn:
        row = conn.execute("SELECT user_id, reservation_id FROM username_claims WHERE username = %s", (username,)).fetchone()
    assert row is not None
    stranger = Claim("username", username, uuid.uuid4(), row[1])  # an account that does not hold it
    assert await claims.resolve(stranger) is False
    assert _claim_states(cluster, "username", username) == ["confirmed"]


async def test_a_unique_violation_on_the_account_row_is_a_409(pools: PrimaryPools, passwords: Passwords) -> None:
    # The claims should prevent it; a claim lost to a bug or a manual delete must still not be a 500.
    first = await service(pools, passwords).register(registration())
    store = AccountStore(pools)
    shard = pools.shard_for(str(first.account.user_id))
    twin = uuid.uuid4()
    while pools.shard_for(str(twin)) != shard:
        twin = uuid.uuid4()
    with pytest.raises(Conflict):
        await store.create(NewAccount(
            twin, uuid.uuid4(), "A", "B", first.account.username, f"{unique()}@example.com", "x", uuid.uuid4(),
        ))


async def test_invalid_fields_are_named_and_write_nothing(pools: PrimaryPools, passwords: Passwords) -> None:
    accounts = service(pools, passwords)
    good = registration()
    for field, bad in [("username", "x"), ("email", "nope"), ("password", "short"), ("first_name", " ")]:
        request = replace(good, **{field: bad})
        with pytest.raises(InvalidInput) as caught:
            await accounts.register(request)
        assert caught.value.details["field"] == field
    assert await ClaimStore(pools).holder("username", good.username) is None


async def test_wrong_password_and_unknown_user_get_the_same_answer(pools: PrimaryPools, passwords: Passwords) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    messages = []
    for login, password in [(profile.account.username, "wrong-password"), (unique("ghost"), PASSWORD), ("no such@@", PASSWORD)]:
        with pytest.raises(Unauthenticated) as caught:
            await accounts.login(login, password, "c")
        messages.append(caught.value.message)
    assert len(set(messages)) == 1


async def test_failed_logins_are_rate_limited_per_account(pools: PrimaryPools, passwords: Passwords, redis: Redis) -> None:
    accounts = service(pools, passwords, redis)
    profile = await accounts.register(registration())
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await accounts.login(profile.account.username, "wrong-password", "c")
    with pytest.raises(RateLimited) as caught:
        await accounts.login(profile.account.username, PASSWORD, "c")
    assert 0 < caught.value.retry_after <= 1  # the first delay: backoff, not the whole window


async def _outcomes(attempts: list[Any]) -> dict[str, int]:
    results = await asyncio.gather(*attempts, return_exceptions=True)
    counts: dict[str, int] = {}
    for result in results:
        kind = type(result).__name__ if isinstance(result, BaseException) else "ok"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


async def test_fifty_parallel_wrong_guesses_for_one_account_pass_at_most_the_free_ones(
    pools: PrimaryPools, passwords: Passwords, redis: Redis
) -> None:
    accounts = service(pools, passwords, account_limits=limits(redis, free=5))
    profile = await accounts.register(registration())
    counts = await _outcomes([accounts.login(profile.account.username, f"wrong-{i}", f"c{i}") for i in range(50)])
    assert counts == {"Unauthenticated": 5, "RateLimited": 45}


async def test_fifty_parallel_attempts_from_one_client_pass_at_most_its_limit(
    pools: PrimaryPools, passwords: Passwords, redis: Redis
) -> None:
    accounts = service(pools, passwords, account_limits=limits(redis, per_client=10))
    counts = await _outcomes([accounts.login(unique("ghost"), PASSWORD, "one-client") for _ in range(50)])
    assert counts == {"Unauthenticated": 10, "RateLimited": 40}


async def test_wrong_passwords_slow_the_owner_down_instead_of_locking_them_out(
    pools: PrimaryPools, passwords: Passwords, redis: Redis
) -> None:
    accounts = service(pools, passwords, account_limits=limits(redis, free=3, base_s=0.5))
    profile = await accounts.register(registration())
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await accounts.login(profile.account.username, "wrong-password", "c")
    with pytest.raises(RateLimited) as caught:
        await accounts.login(profile.account.username, PASSWORD, "c")
    await asyncio.sleep(caught.value.retry_after + 0.05)
    await accounts.login(profile.account.username, PASSWORD, "c")  # the owner gets in
    for _ in range(3):  # and success forgot the failures
        with pytest.raises(Unauthenticated):
            await accounts.login(profile.account.username, "wrong-password", "c")


async def test_later_failures_wait_longer(pools: PrimaryPools, passwords: Passwords, redis: Redis) -> None:
    accounts = service(pools, passwords, account_limits=limits(redis, free=1, base_s=0.3))
    profile = await accounts.register(registration())
    waits = []
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await accounts.login(profile.account.username, "wrong-password", "c")
        with pytest.raises(RateLimited) as caught:
            await accounts.login(profile.account.username, "wrong-password", "c")
        waits.append(caught.value.retry_after)
        await asyncio.sleep(caught.value.retry_after + 0.05)
    assert waits[0] < waits[1] < waits[2] <= 1.2 + 0.01


async def test_sign_in_and_password_changes_fail_closed_when_redis_is_down(
    pools: PrimaryPools, passwords: Passwords
) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        limited = service(pools, passwords, account_limits=limits(dead))
        with pytest.raises(LimiterUnavailable):
            await limited.login(profile.account.username, PASSWORD, "c")
        with pytest.raises(LimiterUnavailable):
            await limited.change_password(profile.account.user_id, PASSWORD, "new-password-1", "c")
    finally:
        await dead.aclose()


async def test_password_changes_are_limited_like_sign_in(pools: PrimaryPools, passwords: Passwords, redis: Redis) -> None:
    accounts = service(pools, passwords, account_limits=limits(redis, free=5))
    profile = await accounts.register(registration())
    counts = await _outcomes([
        accounts.change_password(profile.account.user_id, f"wrong-{i}", "new-password-1", f"c{i}") for i in range(50)
    ])
    assert counts == {"Unauthenticated": 5, "RateLimited": 45}


async def test_renaming_moves_the_claim_and_frees_the_old_name(pools: PrimaryPools, passwords: Passwords) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    old = profile.account.username
    new = unique("renamed")
    updated = await accounts.update_me(profile.account.user_id, username=new.upper(), first_name="Grace")
    assert updated.account.username == new and updated.first_name == "Grace"
    await OutboxRelay(pools, HANDLERS).drain()
    await accounts.register(registration(username=old, email=f"{unique()}@example.com"))  # old name free
    with pytest.raises(Conflict):
        await accounts.register(registration(username=new))


async def test_deleting_an_account_frees_its_names_once_relayed(pools: PrimaryPools, passwords: Passwords) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    await accounts.delete_me(profile.account.user_id)
    with pytest.raises(Unauthenticated):
        await accounts.me(profile.account.user_id)
    await OutboxRelay(pools, HANDLERS).drain()
    await accounts.register(registration(username=profile.account.username, email=profile.account.email))


async def test_changing_the_password_needs_the_current_one_and_revokes_sessions(
    pools: PrimaryPools, passwords: Passwords
) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    tokens = await accounts.login(profile.account.username, PASSWORD, "c")
    with pytest.raises(Unauthenticated):
        await accounts.change_password(profile.account.user_id, "not-it-at-all", "new-password-1")
    await accounts.change_password(profile.account.user_id, PASSWORD, "new-password-1")
    with pytest.raises(Unauthenticated):
        await accounts.refresh(tokens.refresh_token)
    await accounts.login(profile.account.username, "new-password-1", "c")


async def test_a_rename_to_the_same_names_writes_no_event_and_bumps_nothing(
    pools: PrimaryPools, passwords: Passwords
) -> None:
    accounts = service(pools, passwords)
    profile = await accounts.register(registration())
    user_id = profile.account.user_id
    state = (
        "SELECT (SELECT count(*) FROM outbox WHERE aggregate = %(agg)s AND type = 'user.renamed'),"
        " (SELECT (xmin::text, updated_at) FROM users WHERE id = %(id)s)"
    )
    params = {"agg": f"user:{user_id}", "id": user_id}
    async with pools.transaction_for(user_id, name="test_rename_state") as conn:
        before = await (await conn.execute(state, params)).fetchone()
    await accounts.update_me(user_id, first_name="Ada", last_name="Lovelace")
    await accounts.update_me(user_id, first_name="Ada")
    async with pools.transaction_for(user_id, name="test_rename_state") as conn:
        after = await (await conn.execute(state, params)).fetchone()
    assert after == before
    await accounts.update_me(user_id, last_name="Byron")
    async with pools.transaction_for(user_id, name="test_rename_state") as conn:
        renamed = await (await conn.execute(state, params)).fetchone()
    assert renamed is not None and before is not None and renamed[0] == before[0] + 1
