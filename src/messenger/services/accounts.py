"""Account use cases: register, sign in, refresh, sign out, read and change one's account.

No SQL and no HTTP here: claims and accounts come from storage, hashing and tokens from
their services, and each error is a domain error the API maps to a status.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

from messenger.domain.accounts import (
    Account,
    check_password,
    is_email,
    normalize_email,
    normalize_username,
)
from messenger.domain.errors import InvalidInput, MessengerError, NotFound, Unauthenticated
from messenger.domain.ids import new_id
from messenger.domain.users import clean_name
from messenger.services.passwords import Passwords
from messenger.services.tokens import (
    TokenSigner,
    new_refresh_token,
    refresh_token_hash,
    refresh_token_user,
)
from messenger.storage.accounts import AccountStore, NewAccount
from messenger.storage.claims import Claim, ClaimKind, ClaimStore
from messenger.storage.redis.rate_limits import RateLimit

Step = Callable[[str], Awaitable[None]]


async def _no_step(name: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Registration:
    username: str
    email: str
    password: str
    first_name: str
    last_name: str


@dataclass(frozen=True, slots=True)
class Profile:
    account: Account
    first_name: str
    last_name: str


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class LoginLimits:
    per_account: RateLimit
    per_client: RateLimit


class AccountService:
    def __init__(
        self,
        claims: ClaimStore,
        accounts: AccountStore,
        passwords: Passwords,
        signer: TokenSigner,
        limits: LoginLimits | None = None,
        *,
        refresh_ttl_s: int = 30 * 24 * 3600,
        step: Step = _no_step,
    ) -> None:
        self._claims = claims
        self._accounts = accounts
        self._passwords = passwords
        self._signer = signer
        self._limits = limits
        self._refresh_ttl_s = refresh_ttl_s
        self._step = step  # tests stop a registration between steps, as a crash would

    # -- registration ----------------------------------------------------------------------

    async def register(self, request: Registration) -> Profile:
        username = normalize_username(request.username)
        email = normalize_email(request.email)
        password = check_password(request.password)
        first_name = clean_name("first_name", request.first_name)
        last_name = clean_name("last_name", request.last_name)
        password_hash = await self._passwords.hash(password)  # before holding any claim

        user_id, account_id, reservation = new_id(), new_id(), new_id()
        claims = [Claim("username", username, user_id, reservation), Claim("email", email, user_id, reservation)]
        await self._reserve_all(claims)
        try:
            account, _ = await self._accounts.create(NewAccount(
                user_id, account_id, first_name, last_name, username, email, password_hash, reservation,
            ))
        except Exception:
            await self._release_all(claims)
            raise
        await self._step("account_written")
        await self._confirm_all(claims)
        return Profile(account, first_name, last_name)

    async def _reserve_all(self, claims: list[Claim]) -> None:
        held: list[Claim] = []
        try:
            for claim in claims:
                await self._claims.reserve(claim)
                held.append(claim)
                await self._step(f"reserved_{claim.kind}")
        except Exception:
            await self._release_all(held)
            raise

    async def _release_all(self, claims: list[Claim]) -> None:
        for claim in claims:
            with suppress(MessengerError, OSError):  # the sweeper frees what this cannot
                await self._claims.release(claim)

    async def _confirm_all(self, claims: list[Claim]) -> None:
        for claim in claims:
            with suppress(MessengerError, OSError):  # the relay confirms from the outbox event
                await self._claims.confirm(claim)

    # -- sign-in ---------------------------------------------------------------------------

    async def login(self, login: str, password: str, client: str) -> TokenPair:
        if not isinstance(login, str) or not isinstance(password, str):
            raise InvalidInput("login and password must be strings")
        kind: ClaimKind = "email" if is_email(login) else "username"
        try:
            value = normalize_email(login) if kind == "email" else normalize_username(login)
        except InvalidInput:
            value = None  # cannot exist: answered like a wrong password
        if self._limits is not None:
            await self._limits.per_client.check(client)
            if value is not None:
                await self._limits.per_account.check(value)
            await self._limits.per_client.hit(client)

        stored = None
        if value is not None and len(password) <= 1024:
            holder = await self._claims.holder(kind, value)
            if holder is not None:
                stored = await self._accounts.for_login(holder.user_id, kind, value)
        verified = await self._passwords.verify(stored.password_hash if stored else None, password[:1024])
        if stored is None or not verified:
            if self._limits is not None and value is not None:
                await self._limits.per_account.hit(value)
            raise Unauthenticated("wrong username, email or password")
        return await self._issue(stored.account.user_id, family_id=new_id())

    async def _issue(self, user_id: uuid.UUID, family_id: uuid.UUID) -> TokenPair:
        refresh = new_refresh_token(user_id)
        await self._accounts.add_refresh(user_id, family_id, new_id(), refresh_token_hash(refresh), self._refresh_ttl_s)
        return TokenPair(self._signer.issue_access(user_id), refresh, self._signer.access_ttl_s, user_id)

    async def refresh(self, token: str) -> TokenPair:
        user_id = refresh_token_user(token)
        successor = new_refresh_token(user_id)
        record = await self._accounts.rotate_refresh(
            user_id, refresh_token_hash(token), new_id(), refresh_token_hash(successor), self._refresh_ttl_s
        )
        if record is None:
            raise Unauthenticated("invalid refresh token")
        if record.used or record.revoked:
            raise Unauthenticated("refresh token already used: every token of this session is revoked")
        if record.expired:
            raise Unauthenticated("refresh token expired")
        return TokenPair(self._signer.issue_access(user_id), successor, self._signer.access_ttl_s, user_id)

    async def logout(self, token: str) -> None:
        user_id = refresh_token_user(token)
        if not await self._accounts.revoke_refresh(user_id, refresh_token_hash(token)):
            raise Unauthenticated("invalid refresh token")

    # -- one's own account -----------------------------------------------------------------

    async def me(self, user_id: uuid.UUID) -> Profile:
        try:
            stored = await self._accounts.get(user_id)
        except NotFound:
            raise Unauthenticated("the account of this token no longer exists") from None
        return Profile(stored.account, stored.first_name, stored.last_name)

    async def find_by_username(self, username: str) -> Profile:
        """The account that holds `username` now (any letter case), through its claim: one
        read on the claim's shard, one on the holder's. A name that is only reserved (a
        registration or rename in flight) or that could not be valid names nobody: 404."""
        try:
            value = normalize_username(username)
        except InvalidInput:
            raise NotFound("no user has this username", details={"username": username}) from None
        holder = await self._claims.holder("username", value)
        stored = None
        if holder is not None:
            with suppress(NotFound):
                stored = await self._accounts.get(holder.user_id)
        if stored is None or stored.account.username != value:
            raise NotFound("no user has this username", details={"username": value})
        return Profile(stored.account, stored.first_name, stored.last_name)

    async def update_me(
        self,
        user_id: uuid.UUID,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        email: str | None = None,
    ) -> Profile:
        first = None if first_name is None else clean_name("first_name", first_name)
        last = None if last_name is None else clean_name("last_name", last_name)
        new_username = None if username is None else normalize_username(username)
        new_email = None if email is None else normalize_email(email)
        current = await self.me(user_id)
        if first is not None or last is not None:
            await self._accounts.update_names(user_id, first, last)
        changes: list[Claim] = []
        reservation = new_id()
        if new_username is not None and new_username != current.account.username:
            changes.append(Claim("username", new_username, user_id, reservation))
        if new_email is not None and new_email != current.account.email:
            changes.append(Claim("email", new_email, user_id, reservation))
        if changes:
            await self._reserve_all(changes)
            try:
                await self._accounts.change_login(
                    user_id,
                    new_username or current.account.username,
                    new_email or current.account.email,
                    reservation,
                )
            except Exception:
                await self._release_all(changes)
                raise
            await self._confirm_all(changes)
        return await self.me(user_id)

    async def change_password(self, user_id: uuid.UUID, current_password: str, new_password: str) -> None:
        new = check_password(new_password, "new_password")
        stored = await self._accounts.get(user_id)
        if not isinstance(current_password, str) or not await self._passwords.verify(stored.password_hash, current_password[:1024]):
            raise Unauthenticated("current password is wrong")
        await self._accounts.set_password(user_id, await self._passwords.hash(new))

    async def delete_me(self, user_id: uuid.UUID) -> None:
        try:
            await self._accounts.delete_user(user_id)
        except NotFound:
            raise Unauthenticated("the account of this token no longer exists") from None
