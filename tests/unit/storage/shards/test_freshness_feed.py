"""The freshness feed's bookkeeping, with a socket pair standing in for Redis's side."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from messenger.storage.redis.resp import encode_command
from messenger.storage.shards import freshness_feed
from messenger.storage.shards.freshness_feed import (
    FEED_CHANNEL,
    SILENCE_LIMIT_S,
    FreshnessFeed,
    feed_message,
    parse_feed_message,
)

TTL_S = 5.0


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def published(key: str, lsn: int) -> bytes:
    """What Redis sends a subscriber for one PUBLISH on the feed channel."""
    return encode_command(("message", FEED_CHANNEL, feed_message(key, lsn)))


SUBSCRIBED = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%b\r\n:1\r\n" % (len(FEED_CHANNEL), FEED_CHANNEL.encode())


@pytest.fixture
def redis_side() -> Iterator[tuple[FreshnessFeed, socket.socket, Clock]]:
    """A feed whose subscription socket is one end of a pair; the test writes the other."""
    clock = Clock()
    feed = FreshnessFeed("redis://127.0.0.1:1", ttl_s=TTL_S, timeout_s=0.1, clock=clock)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    feed._sock = ours
    feed._readable.register(ours.fileno(), select.POLLIN)
    try:
        yield feed, theirs, clock
    finally:
        ours.close()
        theirs.close()


def subscribed_and_complete(feed: FreshnessFeed, redis: socket.socket, clock: Clock) -> None:
    redis.sendall(SUBSCRIBED)
    feed.drain()
    clock.now += TTL_S


def test_a_feed_message_round_trips() -> None:
    assert parse_feed_message(feed_message("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 0x1_0000_0A0).encode()) == (
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 0x1_0000_0A0
    )
    assert parse_feed_message(b"key with spaces 00000000000000ff") == ("key with spaces", 0xFF)
    assert parse_feed_message(b"garbage") is None


def test_it_does_not_answer_before_a_ttl_has_passed_since_it_subscribed(redis_side) -> None:  # type: ignore[no-untyped-def]
    """A marker stored before the subscription was never heard: only once every such marker
    has expired may a missing key mean 'not written lately'."""
    feed, redis, clock = redis_side
    assert feed.lookup("k") == (False, None)
    redis.sendall(SUBSCRIBED)
    assert feed.lookup("k") == (False, None)
    clock.now += TTL_S - 0.01
    assert feed.lookup("k") == (False, None)
    clock.now += 0.01
    assert feed.lookup("k") == (True, None)
    assert feed.complete


def test_a_lookup_reads_what_the_socket_holds_before_it_answers(redis_side) -> None:  # type: ignore[no-untyped-def]
    feed, redis, clock = redis_side
    subscribed_and_complete(feed, redis, clock)
    redis.sendall(published("k", 0x20))
    assert feed.lookup("k") == (True, 0x20)
    assert feed.lookup("other") == (True, None)


def test_a_marker_keeps_the_highest_position_and_ends_a_ttl_after_it_was_last_heard(redis_side) -> None:  # type: ignore[no-untyped-def]
    feed, redis, clock = redis_side
    subscribed_and_complete(feed, redis, clock)
    redis.sendall(published("k", 0x30) + published("k", 0x10))
    assert feed.lookup("k") == (True, 0x30)
    clock.now += TTL_S - 1
    redis.sendall(published("k", 0x10))  # an older position heard again refreshes the TTL
    feed.drain()
    clock.now += 2
    assert feed.lookup("k") == (True, 0x30)
    clock.now += TTL_S
    assert feed.lookup("k") == (True, None)
    redis.sendall(published("j", 1))
    feed.drain()
    assert len(feed) == 1  # the expired key was forgotten, not only hidden


def test_a_large_read_means_redis_may_hold_more_and_reads_ask_it_for_a_moment(redis_side) -> None:  # type: ignore[no-untyped-def]
    feed, redis, clock = redis_side
    subscribed_and_complete(feed, redis, clock)
    backlog = b"".join(published(f"key-{i}", i) for i in range(2000))
    assert len(backlog) >= freshness_feed.BEHIND_BYTES
    redis.sendall(backlog)
    assert feed.lookup("key-1999") == (False, None)
    clock.now += freshness_feed.CATCH_UP_S
    assert feed.lookup("key-1999") == (True, 1999)


def test_past_its_bound_it_forgets_every_marker_and_does_not_answer_for_a_ttl(  # type: ignore[no-untyped-def]
    redis_side, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed, redis, clock = redis_side
    monkeypatch.setattr(freshness_feed, "MAX_KEYS", 3)
    subscribed_and_complete(feed, redis, clock)
    redis.sendall(b"".join(published(f"key-{i}", i) for i in range(4)))
    assert feed.lookup("key-0") == (False, None)
    assert len(feed) == 0
    clock.now += TTL_S
    assert feed.lookup("key-0") == (True, None)


def test_a_ping_unanswered_too_long_stops_the_answers_and_drops_the_subscription(redis_side) -> None:  # type: ignore[no-untyped-def]
    feed, redis, clock = redis_side
    subscribed_and_complete(feed, redis, clock)
    feed._ping()
    assert redis.recv(100) == encode_command(("PING",))
    clock.now += SILENCE_LIMIT_S - 0.1
    assert feed.lookup("k") == (True, None)  # an answer may still come
    clock.now += 0.1
    assert feed.lookup("k") == (False, None)
    feed._ping()
    assert feed._sock is None


def test_any_answer_clears_an_outstanding_ping(redis_side) -> None:  # type: ignore[no-untyped-def]
    feed, redis, clock = redis_side
    subscribed_and_complete(feed, redis, clock)
    feed._ping()
    redis.sendall(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    clock.now += SILENCE_LIMIT_S * 2
    assert feed.lookup("k") == (True, None)


def test_a_subscription_closed_by_redis_stops_the_answers(redis_side) -> None:  # type: ignore[no-untyped-def]
    feed, redis, clock = redis_side
    subscribed_and_complete(feed, redis, clock)
    redis.close()
    assert feed.lookup("k") == (False, None)
    assert feed._sock is None


def test_an_error_reply_drops_the_subscription(redis_side) -> None:  # type: ignore[no-untyped-def]
    feed, redis, _ = redis_side
    redis.sendall(b"-NOAUTH Authentication required.\r\n")
    assert feed.lookup("k") == (False, None)
    assert feed._sock is None
