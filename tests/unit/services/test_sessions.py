"""Session checks: revoked sessions and users refused, live ones cached so the hot path pays
one Redis call per session per `cache_s`, revocations seen at once on the worker that made them."""

from __future__ import annotations

import uuid

import pytest

from messenger.domain.errors import Unauthenticated
from messenger.services.sessions import Sessions, revoked_frame
from messenger.services.tokens import AccessClaims


class FakeStore:
    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.checks = 0
        self.down = False

    async def revoke(self, keys: list[str]) -> bool:
        self.revoked.update(keys)
        return True

    async def any_revoked(self, keys: list[str]) -> bool | None:
        self.checks += 1
        return None if self.down else any(k in self.revoked for k in keys)


class FakeBus:
    def __init__(self) -> None:
        self.frames: list[tuple[list[uuid.UUID], bytes]] = []

    async def publish(self, user_ids: list[uuid.UUID], frame: bytes) -> None:
        self.frames.append((user_ids, frame))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def claims() -> AccessClaims:
    return AccessClaims(uuid.uuid4(), 2e9, uuid.uuid4())


@pytest.fixture
def parts() -> tuple[FakeStore, FakeBus, Clock, Sessions]:
    store, bus, clock = FakeStore(), FakeBus(), Clock()
    return store, bus, clock, Sessions(store, bus, cache_s=1.0, clock=clock)  # type: ignore[arg-type]


async def test_a_live_session_is_checked_once_per_cache_interval(parts: tuple[FakeStore, FakeBus, Clock, Sessions]) -> None:
    store, _, clock, sessions = parts
    token = claims()
    for _ in range(100):
        await sessions.check(token)
    assert store.checks == 1
    clock.now += 1.1
    await sessions.check(token)
    assert store.checks == 2


async def test_ending_a_session_refuses_it_at_once_here_and_tells_its_sockets(
    parts: tuple[FakeStore, FakeBus, Clock, Sessions],
) -> None:
    _, bus, _, sessions = parts
    token = claims()
    await sessions.check(token)  # cached as alive
    await sessions.end_sessions(token.user_id, [token.session_id])
    with pytest.raises(Unauthenticated):
        await sessions.check(token)
    assert bus.frames == [([token.user_id], revoked_frame(token.session_id))]


async def test_another_workers_revocation_is_seen_once_the_cache_lapses(
    parts: tuple[FakeStore, FakeBus, Clock, Sessions],
) -> None:
    store, bus, clock, sessions = parts
    other = Sessions(store, bus, cache_s=1.0, clock=clock)  # type: ignore[arg-type]
    token = claims()
    await sessions.check(token)
    await other.end_user(token.user_id)
    clock.now += 1.1
    with pytest.raises(Unauthenticated):
        await sessions.check(token)


async def test_with_redis_down_a_signed_token_still_passes(parts: tuple[FakeStore, FakeBus, Clock, Sessions]) -> None:
    store, _, _, sessions = parts
    store.down = True
    await sessions.check(claims())
