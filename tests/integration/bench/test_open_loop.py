"""The open-loop generator against the in-memory fake API (no database involved)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import uvloop

from messenger.bench.loadgen import Connection
from messenger.bench.open_loop import best_rate, run_open_loop_step
from messenger.bench.scenarios import USERS
from messenger.bench.server import ServerProcess, free_port, granian_command


async def _create_users(port: int, n: int) -> list[str]:
    conn = Connection("127.0.0.1", port, 5.0)
    ids = []
    for i in range(n):
        body = msgspec.json.encode({"first_name": "Open", "last_name": f"Loop {i}"})
        ids.append(msgspec.json.decode((await conn.request("POST", USERS, body)).body)["id"])
    conn.close()
    return ids


def test_a_step_sends_on_schedule_over_every_connection_and_reports_percentiles(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = granian_command("messenger.bench.fake_api:create_app", port, 1, factory=True)
    with ServerProcess(command, port, tmp_path / "fake.log"):
        ids = uvloop.run(_create_users(port, 5))
        step = uvloop.run(
            run_open_loop_step(
                "127.0.0.1", port, ids, connections=300, rate=200.0, duration=1.5, fraction=0.5
            )
        )
    assert step.connected == 300
    assert step.sent == 300  # 200/s for 1.5 s, whatever the server did
    assert step.ok == step.sent and step.success_pct == 100.0, step.errors
    assert 0 < step.p50_ms <= step.p95_ms <= step.p99_ms <= step.p999_ms <= step.max_ms


def test_best_rate_needs_both_the_p99_goal_and_full_success() -> None:
    steps = [
        {"rate": 100.0, "p99_ms": 5.0, "success_pct": 100.0},
        {"rate": 300.0, "p99_ms": 9.0, "success_pct": 99.9},
        {"rate": 500.0, "p99_ms": 14.0, "success_pct": 100.0},
        {"rate": 700.0, "p99_ms": 40.0, "success_pct": 100.0},
    ]
    assert best_rate(steps) == 500.0
    assert best_rate(steps[3:]) is None
