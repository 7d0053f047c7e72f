"""The messaging open-loop step against the real server: sends and history pages go out on their
schedule, every send is delivered to the sockets of its group, and the figures add up."""

from __future__ import annotations

from typing import Any

import uvloop

from messenger.bench.messaging_open_loop import run_messaging_open_loop
from messenger.bench.phase import Target
from messenger.bench.server import MESSAGING_ENV
from tests.support.servers import serving


def test_a_step_sends_and_reads_on_schedule_and_every_frame_arrives(cluster: Any) -> None:
    with serving(cluster.topology_path, workers=1, **MESSAGING_ENV) as (base, _pid):
        port = int(base.rsplit(":", 1)[1])
        step = uvloop.run(run_messaging_open_loop(
            Target("127.0.0.1", port), send_rate=12.0, duration=2.0, sockets=8, users=8, group_size=4,
            connections=8,
        ))
    sent = step["latency"]["send"]["count"]
    pages = step["latency"]["history"]["count"]
    assert sent + pages == int(12.0 * (1 + 25 / 60) * 2.0)  # the schedule, whatever the server did
    assert sent > 0 and pages > 0
    assert step["success_pct"] == {"send": 100.0, "history": 100.0}, step["errors"]
    assert step["sockets"] == 8 and step["connected"] == 8
    delivery = step["delivery"]
    assert delivery["missing"] == 0 and delivery["matched"] == delivery["expected"] > 0
    assert step["delivery_from_due"]["count"] == delivery["matched"]
