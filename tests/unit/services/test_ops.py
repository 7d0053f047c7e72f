"""Readiness reasons: a fixed code per server, never the driver's or the exception's text."""

from __future__ import annotations

from messenger.domain.errors import ShardUnavailable
from messenger.services.ops import ServerCheck, server_check

DRIVER_TEXT = 'connection to server at "10.0.0.7", port 5441 failed: FATAL: password authentication failed'


def test_an_unreachable_shard_reads_unreachable_without_the_driver_text() -> None:
    check = server_check(ShardUnavailable("shard_1", "replica", DRIVER_TEXT))
    assert check == ServerCheck(False, "unreachable")


def test_a_server_that_does_not_answer_in_time_reads_timeout() -> None:
    assert server_check(TimeoutError(DRIVER_TEXT)) == ServerCheck(False, "timeout")


def test_any_other_failure_reads_error() -> None:
    assert server_check(RuntimeError(DRIVER_TEXT)) == ServerCheck(False, "error")


def test_an_answer_is_up() -> None:
    assert server_check("0007") == ServerCheck(True)
