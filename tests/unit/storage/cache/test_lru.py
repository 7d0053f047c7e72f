from messenger.storage.cache.lru import GenerationalLru


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_fill_is_served_until_invalidated() -> None:
    lru: GenerationalLru[str, int] = GenerationalLru(10)
    assert lru.fill("a", 1, lru.generation("a"))
    assert lru.get("a") == (True, 1)
    lru.invalidate("a")
    assert lru.get("a") == (False, None)


def test_the_least_recently_used_entry_is_evicted_beyond_the_bound() -> None:
    lru: GenerationalLru[str, int] = GenerationalLru(2)
    lru.fill("a", 1, lru.generation("a"))
    lru.fill("b", 2, lru.generation("b"))
    lru.get("a")  # b is now the least recently used
    lru.fill("c", 3, lru.generation("c"))
    assert len(lru) == 2
    assert lru.evictions == 1
    assert lru.get("b") == (False, None)
    assert lru.get("a") == (True, 1)
    assert lru.get("c") == (True, 3)


def test_a_fill_that_started_before_an_invalidation_does_not_insert() -> None:
    lru: GenerationalLru[str, int] = GenerationalLru(10)
    seen = lru.generation("a")  # the fill reads the generation, then the database …
    lru.invalidate("a")  # … a write of the key lands meanwhile …
    assert not lru.fill("a", 1, seen)  # … so its (stale) result is dropped
    assert lru.get("a") == (False, None)
    assert lru.fill("a", 2, lru.generation("a"))  # a fill started afterwards does insert


def test_an_invalidation_of_another_key_does_not_void_a_fill() -> None:
    lru: GenerationalLru[str, int] = GenerationalLru(10)
    seen = lru.generation("a")
    lru.invalidate("b")
    assert lru.fill("a", 1, seen)


def test_a_fill_that_started_before_a_clear_does_not_insert() -> None:
    lru: GenerationalLru[str, int] = GenerationalLru(10)
    seen = lru.generation("a")
    lru.clear()
    assert not lru.fill("a", 1, seen)


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    lru: GenerationalLru[str, int] = GenerationalLru(10, ttl_s=30.0, clock=clock)
    lru.fill("a", 1, lru.generation("a"))
    clock.now += 29.9
    assert lru.get("a") == (True, 1)
    clock.now += 0.1
    assert lru.get("a") == (False, None)
    assert len(lru) == 0


def test_many_invalidated_keys_still_void_older_fills() -> None:
    lru: GenerationalLru[int, int] = GenerationalLru(10)
    seen = lru.generation(0)
    for key in range(70_000):  # beyond the generations kept per key
        lru.invalidate(key)
    assert not lru.fill(0, 1, seen)


def test_a_key_is_not_filled_while_replicas_may_still_hold_its_old_row() -> None:
    clock = FakeClock()
    lru: GenerationalLru[str, int] = GenerationalLru(10, hold_s=3.0, clock=clock)
    lru.invalidate("a")
    assert not lru.fill("a", 1, lru.generation("a"))
    assert lru.fill("b", 1, lru.generation("b"))  # other keys are not held
    clock.now += 3.0
    assert lru.fill("a", 2, lru.generation("a"))


def test_after_a_clear_no_key_is_filled_for_the_hold() -> None:
    clock = FakeClock()
    lru: GenerationalLru[str, int] = GenerationalLru(10, hold_s=3.0, clock=clock)
    lru.clear()
    assert not lru.fill("b", 1, lru.generation("b"))
    clock.now += 3.0
    assert lru.fill("b", 1, lru.generation("b"))
