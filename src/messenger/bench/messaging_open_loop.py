"""Messaging in open loop: sends and history pages on a fixed schedule, with sockets open.

The closed-loop messaging phases find how many sends per second the server completes; this step
then schedules sends at a fraction of that (issue 14 asks 50 %) and history pages beside them in
the scenario's proportion (25 history pages to 60 sends), over a pool of keep-alive HTTP
connections, while `sockets` WebSockets listen. Request i is due at `start + i / rate` whatever
happened before, and every latency runs from that due time (no coordinated omission), into HDR
histograms: the send's answer, the history page's answer, and each `message.created` frame a
socket receives for a send (due time -> frame: what a member waits for a message, queueing
included), beside the frame's delay after the send's own answer.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict
from typing import Any

import msgspec

from messenger.bench.loadgen import RequestFailed, raise_fd_limit
from messenger.bench.messaging import DRAIN_S, auth_header, set_up_messaging
from messenger.bench.open_loop import new_histogram, on_schedule, open_connections
from messenger.bench.phase import LatencySummary, Target
from messenger.bench.scenarios import BENCH_BODY_PREFIX, CONVERSATIONS, PAGE_LIMIT

HISTORY_PER_SEND = 25 / 60
"""The messaging scenario's history pages per send."""
SEND_FRACTION = 0.5


async def run_messaging_open_loop(
    target: Target,
    *,
    send_rate: float,
    duration: float,
    sockets: int,
    users: int,
    group_size: int,
    connections: int = 256,
    timeout: float = 10.0,
    seed: int = 0,
    note: Any = None,
) -> dict[str, Any]:
    """One open-loop step; returns its figures as a dict for the report."""
    raise_fd_limit(connections + sockets + 1024)
    rng = random.Random(seed)
    setup = await set_up_messaging(target, max(2, users), group_size, sockets, rng, timeout, note)
    tracker = setup.tracker
    senders = [a for a in setup.accounts if setup.conversations_of[a.user_id]]
    latencies = {"send": new_histogram(), "history": new_histogram()}
    ok: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    idle = await open_connections(target.host, target.port, connections, timeout, errors)
    connected = idle.qsize()

    history_rate = send_rate * HISTORY_PER_SEND
    rate = send_rate + history_rate

    async def fire(due: float) -> None:
        kind = "send" if rng.random() < send_rate / rate else "history"
        account = rng.choice(senders)
        cid = rng.choice(setup.conversations_of[account.user_id])
        client_id = uuid.uuid4().hex
        conn = await idle.get()
        try:
            if kind == "send":
                body = msgspec.json.encode({"body": BENCH_BODY_PREFIX + client_id, "client_message_id": client_id})
                response = await conn.request("POST", f"{CONVERSATIONS}/{cid}/messages", body, auth_header(account))
            else:
                response = await conn.request(
                    "GET", f"{CONVERSATIONS}/{cid}/messages?limit={PAGE_LIMIT}", None, auth_header(account)
                )
        except RequestFailed as failure:
            errors[f"{kind} {failure.kind}"] += 1
            return
        finally:
            idle.put_nowait(conn)
        done = time.perf_counter()
        latencies[kind].record_value(max(1, int((done - due) * 1e6)))
        if response.status == (201 if kind == "send" else 200):
            ok[kind] += 1
            if kind == "send":
                tracker.sent(cid, client_id, due, done)
        else:
            errors[f"{kind} status {response.status}"] += 1

    total = max(1, int(rate * duration))
    if note:
        note(f"messaging open loop: {send_rate:,.0f} sends/s + {history_rate:,.0f} history pages/s over "
             f"{connected:,} connections, {len(setup.pool.sockets):,} sockets, {duration:.0f} s")
    try:
        await on_schedule(rate, total, fire, wait_s=timeout + 5, errors=errors)
        tracker.recording = False
        await asyncio.sleep(DRAIN_S)
    finally:
        while not idle.empty():
            idle.get_nowait().close()
        await setup.pool.close()
    delivery = tracker.summary(len(setup.pool.sockets), dict(setup.pool.errors))
    sent = {kind: int(latencies[kind].get_total_count()) + _errors_of(errors, kind) for kind in latencies}
    return {
        "send_rate": send_rate,
        "history_rate": history_rate,
        "duration_s": duration,
        "connections": connections,
        "connected": connected,
        "sockets": len(setup.pool.sockets),
        "accounts": len(setup.accounts),
        "groups": len(setup.groups),
        "success_pct": {k: 100.0 * ok[k] / sent[k] if sent[k] else 0.0 for k in latencies},
        "latency": {k: asdict(LatencySummary.of_histogram(h)) for k, h in latencies.items()},
        "errors": dict(errors),
        "delivery": delivery,
        "delivery_from_due": delivery["from_send_start"],
    }


def _errors_of(errors: Counter[str], kind: str) -> int:
    return sum(n for name, n in errors.items() if name.startswith(kind + " "))


def summary_line(step: dict[str, Any]) -> str:
    """One line for the terminal."""
    d = step["delivery_from_due"]
    return (f"  sends p99 {step['latency']['send']['p99_ms']:.1f} ms, history p99 "
            f"{step['latency']['history']['p99_ms']:.1f} ms, delivery p99 {d['p99_ms']:.1f} ms from the due time "
            f"({step['delivery']['matched']:,} frames, {step['delivery']['missing']:,} missing)")
