import uuid

from messenger.metrics import Metrics
from messenger.storage.cache.bus import EVERY_KEY
from messenger.storage.cache.members import MembershipCache, membership_text, parse_membership


def _connected(size: int = 10, metrics: Metrics | None = None) -> MembershipCache:
    cache = MembershipCache(size, metrics=metrics)
    cache.set_connected(True)
    return cache


def test_a_membership_key_survives_its_bus_text() -> None:
    key = (uuid.uuid4(), uuid.uuid4())
    assert parse_membership(membership_text(key)) == key


def test_an_invalidation_from_the_bus_drops_that_membership_only() -> None:
    cache = _connected()
    conversation, removed, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for user in (removed, kept):
        cache.fill((conversation, user), True, cache.generation((conversation, user)))
    cache.invalidate_text(membership_text((conversation, removed)))
    assert cache.get((conversation, removed)) == (False, None)
    assert cache.get((conversation, kept)) == (True, True)


def test_every_key_from_the_bus_clears_every_membership() -> None:
    cache = _connected()
    key = (uuid.uuid4(), uuid.uuid4())
    cache.fill(key, True, cache.generation(key))
    cache.invalidate_text(EVERY_KEY)
    assert cache.get(key) == (False, None)


def test_a_fill_racing_a_removal_from_the_bus_is_dropped() -> None:
    cache = _connected()
    key = (uuid.uuid4(), uuid.uuid4())
    seen = cache.generation(key)
    cache.invalidate_text(membership_text(key))
    cache.fill(key, True, seen)
    assert cache.get(key) == (False, None)


def test_malformed_bus_text_is_ignored() -> None:
    cache = _connected()
    key = (uuid.uuid4(), uuid.uuid4())
    cache.fill(key, True, cache.generation(key))
    cache.invalidate_text("not-a-key")
    assert cache.get(key) == (True, True)


def test_nothing_is_served_while_the_subscriber_is_not_connected() -> None:
    cache = MembershipCache(10)
    key = (uuid.uuid4(), uuid.uuid4())
    cache.fill(key, True, cache.generation(key))
    assert cache.get(key) == (False, None)


def test_memberships_are_bounded_and_counted_under_their_own_label() -> None:
    metrics = Metrics()
    cache = _connected(size=1, metrics=metrics)
    a, b = (uuid.uuid4(), uuid.uuid4()), (uuid.uuid4(), uuid.uuid4())
    cache.get(a)
    cache.fill(a, True, cache.generation(a))
    cache.get(a)
    cache.fill(b, True, cache.generation(b))
    assert len(cache) == 1

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"cache": "members"})

    assert sample("cache_hits_total") == 1
    assert sample("cache_misses_total") == 1
    assert sample("cache_evictions_total") == 1
    assert metrics.registry.get_sample_value("cache_hits_total", {"cache": "users"}) is None
