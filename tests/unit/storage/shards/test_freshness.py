from __future__ import annotations

import pytest

from messenger.storage.redis.resp import RedisUnavailable
from messenger.storage.shards.breaker import CircuitBreaker
from messenger.storage.shards.freshness import (
    FreshnessMarkers,
    FreshnessUnknown,
    int_to_lsn,
    lsn_to_int,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0/0", 0), ("0/304CC08", 0x304CC08), ("1/0", 1 << 32), ("FFFFFFFF/FFFFFFFF", 2**64 - 1)],
)
def test_lsn_text_round_trips(text: str, value: int) -> None:
    assert lsn_to_int(text) == value
    assert int_to_lsn(value) == text


def test_lsn_order_is_numeric_not_textual() -> None:
    assert lsn_to_int("0/A0000000") < lsn_to_int("1/10")


def test_fixed_width_hex_compares_like_the_numbers() -> None:
    """The Redis script keeps the higher position by comparing the stored text."""
    low, high = lsn_to_int("0/FFFFFFFF"), lsn_to_int("1/0")
    assert f"{low:016x}" < f"{high:016x}"


class FlakyRedis:
    """A marker store whose first `fail` commands time out, then answers like Redis."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.values: dict[str, str] = {}

    async def command(self, *args: str) -> object:
        if self.fail:
            self.fail -= 1
            raise RedisUnavailable("timed out")
        if args[0] == "EVAL":
            key, value = args[3], args[4]
            if key not in self.values or self.values[key] < value:
                self.values[key] = value
            return 1
        if args[0] == "GET":
            raw = self.values.get(args[1])
            return None if raw is None else raw.encode()
        return None

    async def close(self) -> None:
        pass


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def flaky_markers(fail: int) -> tuple[FreshnessMarkers, FlakyRedis, Clock]:
    clock = Clock()
    markers = FreshnessMarkers(
        "redis://127.0.0.1:1", ttl_ms=5000, timeout_s=0.1,
        breaker=CircuitBreaker("redis", failure_threshold=1, reset_after=1.0, clock=clock), clock=clock,
    )
    redis = FlakyRedis(fail)
    markers._client = redis  # type: ignore[assignment]
    return markers, redis, clock


async def test_a_mark_that_could_not_be_stored_sends_reads_of_its_key_to_the_primary() -> None:  # item 13
    markers, _, clock = flaky_markers(fail=1)
    await markers.mark("a", 0x10)  # one slow call: not stored
    await markers.mark("b", 0x20)  # the breaker is open now: it used to be skipped silently
    clock.now += 2  # the breaker would let calls through again
    for key in ("a", "b"):
        with pytest.raises(FreshnessUnknown):
            await markers.get(key)
    assert markers.mark_failures == 2
    clock.now += 10  # past the markers' TTL: the write is on every replica by now
    assert await markers.get("a") is None
    await markers.close()


async def test_marks_not_stored_are_stored_once_redis_answers_again() -> None:
    markers, redis, clock = flaky_markers(fail=1)
    await markers.mark("a", 0x10)
    clock.now += 2  # the breaker lets a call through again
    await markers.retry_unmarked()
    assert redis.values == {"ryw:a": f"{0x10:016x}"}
    assert await markers.get("a") == 0x10  # stored: other workers see it too
    await markers.close()
