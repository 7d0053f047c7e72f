import uuid
from datetime import UTC, datetime

from messenger.domain.users import User
from messenger.metrics import Metrics
from messenger.storage.cache.users import UserCache


def _user(user_id: uuid.UUID) -> User:
    now = datetime.now(UTC)
    return User(user_id, "Ada", "Lovelace", now, now, 0, 0)


def test_nothing_is_filled_or_served_while_the_subscriber_is_not_connected() -> None:
    cache = UserCache(10)
    user_id = uuid.uuid4()
    cache.fill(user_id, _user(user_id), cache.generation(user_id))
    assert cache.get(user_id) == (False, None)
    assert not cache.usable


def test_connecting_or_losing_the_subscriber_clears_the_cache() -> None:
    cache = UserCache(10)
    cache.set_connected(True)
    user_id = uuid.uuid4()
    cache.fill(user_id, _user(user_id), cache.generation(user_id))
    assert cache.get(user_id)[0]
    cache.set_connected(False)
    cache.set_connected(True)
    assert cache.get(user_id) == (False, None)


def test_a_fill_racing_an_invalidation_from_the_bus_is_dropped() -> None:
    cache = UserCache(10)
    cache.set_connected(True)
    user_id = uuid.uuid4()
    seen = cache.generation(user_id)
    cache.invalidate_text(str(user_id))
    cache.fill(user_id, _user(user_id), seen)
    assert cache.get(user_id) == (False, None)


def test_hits_misses_evictions_and_invalidations_are_counted() -> None:
    metrics = Metrics()
    cache = UserCache(1, metrics=metrics)
    cache.set_connected(True)
    a, b = uuid.uuid4(), uuid.uuid4()
    cache.get(a)
    cache.fill(a, _user(a), cache.generation(a))
    cache.get(a)
    cache.fill(b, _user(b), cache.generation(b))
    cache.invalidate(b)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"cache": "users"})

    assert sample("cache_hits_total") == 1
    assert sample("cache_misses_total") == 1
    assert sample("cache_evictions_total") == 1
    assert sample("cache_invalidations_total") == 1
