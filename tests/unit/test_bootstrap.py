"""The composition root's closing steps: none can hold a worker open."""

from __future__ import annotations

import asyncio
import logging

import pytest

from messenger import bootstrap


async def test_a_closing_step_that_never_ends_is_left_after_its_bound_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bootstrap, "SHUTDOWN_STEP_S", 0.05)
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    with caplog.at_level(logging.WARNING, logger="messenger.bootstrap"):
        await asyncio.wait_for(bootstrap.bounded("cache invalidation bus", hangs)(), 1.0)
    assert "cache invalidation bus did not finish" in caplog.text


async def test_a_closing_step_that_fails_is_logged_and_the_next_ones_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def fails() -> None:
        raise OSError("socket already gone")

    async def closes() -> None:
        ran.append("pools")

    with caplog.at_level(logging.WARNING, logger="messenger.bootstrap"):
        await bootstrap.bounded("redis client", fails)()
        await bootstrap.bounded("shard pools", closes)()
    assert ran == ["pools"] and "redis client failed" in caplog.text
