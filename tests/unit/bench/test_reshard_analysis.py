"""The pure figures of a resharding run: which keys move, the windows a request counts in,
latency and errors by key class, CPU per request, the targets and the report's text."""

from __future__ import annotations

from uuid import uuid4

from messenger.bench.loadgen import Response
from messenger.bench.reshard_analysis import (
    MOVING,
    OTHER,
    MovingKeys,
    Sample,
    Window,
    cpu_between,
    errors_by_outcome,
    hold_window,
    latency_by_window,
    render_markdown,
    switch_targets,
    throughput_by_window,
    unexpected_errors,
    windows,
)
from messenger.bench.reshard_load import Ledger, LedgerEntry, Mix, is_refusal, outcome_of
from messenger.bench.reshard_run import PhaseClock
from messenger.storage.resharding.plan import next_shard_indexes, plan_add, planned_shard
from messenger.storage.shards.ring import HashRing, ring_position
from messenger.topology import ShardConfig, Topology


def _topology(shards: int) -> Topology:
    return Topology(1, tuple(ShardConfig(i, f"shard_{i}", "", "", "", "") for i in range(shards)), "redis://x")


def test_moving_keys_are_exactly_those_the_new_ring_places_on_the_new_shard() -> None:
    old = _topology(5)
    plan = plan_add(old, tuple(planned_shard(i) for i in next_shard_indexes(old, 1)))
    keys = MovingKeys.of_plan(plan)
    new_ring = HashRing.for_topology(plan.new)
    for _ in range(2000):
        key = str(uuid4())
        assert (keys.key_class(key) == MOVING) == (new_ring.shard_for(key) == 5), key


def test_range_bounds_are_half_open() -> None:
    keys = MovingKeys([(10, 20), (30, 40)])
    assert [keys.position_moves(p) for p in (9, 10, 19, 20, 29, 30, 39, 40)] == [
        False, True, True, False, False, True, True, False,
    ]
    assert MovingKeys([]).key_class(str(uuid4())) == OTHER
    assert MovingKeys([(0, 2**32)]).key_class("x") == MOVING and ring_position("x") < 2**32


def _sample(start: float, latency: float, op: str = "patch", keys: str = MOVING, outcome: str = "200") -> Sample:
    return Sample(start, latency, op, keys, outcome)


def test_windows_cover_the_load_from_idle_through_each_phase_to_after() -> None:
    spans = windows([("copy", 5.0, 9.0), ("switch", 9.0, 9.5)], 12.0)
    assert [(w.name, w.start, w.end) for w in spans] == [
        ("idle", 0.0, 5.0), ("copy", 5.0, 9.0), ("switch", 9.0, 9.5), ("after", 9.5, 12.0),
    ]
    assert [w.name for w in windows([], 3.0)] == ["idle"]


def test_a_request_counts_in_every_window_it_was_in_flight() -> None:
    switch = Window("switch", 9.0, 9.5)
    assert switch.overlaps(_sample(8.0, 1.2))  # started before, answered during
    assert switch.overlaps(_sample(9.2, 0.1))
    assert switch.overlaps(_sample(8.0, 3.0))  # held across the whole window
    assert not switch.overlaps(_sample(8.0, 0.5))
    assert not switch.overlaps(_sample(9.5, 0.1))


def test_latency_splits_writes_and_reads_by_key_class() -> None:
    samples = [
        _sample(9.1, 0.9), _sample(9.2, 0.1), _sample(9.25, 0.05), _sample(9.2, 0.02, keys=OTHER),
        _sample(9.3, 0.005, op="get", keys=OTHER), _sample(1.0, 0.01),
    ]
    rows = latency_by_window(samples, windows([("switch", 9.0, 9.5)], 12.0))
    by = {(r["window"], r["kind"], r["keys"]): r for r in rows}
    moving = by[("switch", "write", MOVING)]
    assert moving["requests"] == 3 and moving["max_ms"] == 900.0 and moving["p50_ms"] == 100.0
    assert by[("switch", "write", OTHER)]["max_ms"] == 20.0
    assert by[("switch", "read", OTHER)]["requests"] == 1
    assert by[("idle", "write", MOVING)]["requests"] == 1
    assert by[("after", "read", MOVING)]["requests"] == 0


def test_failures_that_got_no_answer_count_as_requests_but_not_in_the_percentiles() -> None:
    rows = latency_by_window([_sample(1.0, 10.0, outcome="timeout"), _sample(1.0, 0.01)], windows([], 5.0))
    idle = rows[0]
    assert idle["requests"] == 2 and idle["count"] == 1 and idle["max_ms"] == 10.0


def test_only_the_bounded_retry_is_an_expected_error() -> None:
    samples = [
        _sample(1, 3.1, outcome="503 range_moved"), _sample(1, 0.1, outcome="503 shard_unavailable"),
        _sample(1, 10, keys=OTHER, outcome="timeout"), _sample(1, 0.1, op="create", keys="unknown", outcome="500"),
        _sample(1, 0.1),
    ]
    assert unexpected_errors(samples) == 3
    assert errors_by_outcome(samples) == {
        MOVING: {"503 range_moved": 1, "503 shard_unavailable": 1}, OTHER: {"timeout": 1}, "unknown": {"500": 1},
    }


def test_cpu_is_interpolated_between_samples() -> None:
    cpu = [(0.0, 0.0), (2.0, 1.0), (4.0, 1.0)]
    assert cpu_between(cpu, 1.0, 3.0) == 0.5
    assert cpu_between(cpu, -1.0, 5.0) == 1.0
    assert cpu_between(cpu[:1], 0.0, 1.0) is None


def test_throughput_counts_answered_requests_ending_in_the_window() -> None:
    samples = [_sample(0.5, 0.1), _sample(1.9, 0.2), _sample(0.2, 0.1, outcome="timeout")]
    rows = throughput_by_window(samples, [Window("idle", 0.0, 2.0)], [(0.0, 0.0), (2.0, 0.001)])
    assert rows[0]["requests"] == 1 and rows[0]["rps"] == 0.5
    assert round(rows[0]["server_cpu_us_per_request"]) == 1000


def _latency_row(window: str, keys: str, p99_ms: float, max_ms: float, count: int = 10) -> dict[str, object]:
    return {"window": window, "kind": "write", "keys": keys, "count": count, "p99_ms": p99_ms, "max_ms": max_ms}


def test_targets_say_which_goal_the_switch_met() -> None:
    latency = [
        _latency_row("switch", MOVING, 800, 3500), _latency_row("switch", OTHER, 40, 50),
        _latency_row("idle", OTHER, 30, 40),
    ]
    met = {t["target"]: t["met"] for t in switch_targets(latency, lost=0, references_ok=True, unexpected=0)}
    assert met == {
        "switch: moving-key write p99": True, "switch: moving-key write max": False,
        "switch: other-key write p99": True, "lost acknowledged writes": True,
        "errors other than bounded retries": True, "check references clean": True,
    }
    none = switch_targets([_latency_row("switch", MOVING, 0, 0, count=0)], lost=2, references_ok=False, unexpected=1)
    assert [t["met"] for t in none] == [False, False, False, False]


def test_the_ledger_allows_the_last_acknowledged_value_and_any_unanswered_after_it() -> None:
    ledger = Ledger()
    ledger.acknowledge("a", "v1")
    ledger.unanswered("a", "v2")
    assert ledger.entries["a"].allowed() == {"v1", "v2"}
    ledger.acknowledge("a", "v3")
    assert ledger.entries["a"].allowed() == {"v3"}
    assert LedgerEntry(uncertain=["x"]).allowed() == {"x"}


def test_outcomes_carry_the_error_code_and_refusals_wrote_nothing() -> None:
    body = b'{"error": {"code": "range_moved", "message": "m", "details": {}}}'
    assert outcome_of(Response(503, body)) == "503 range_moved"
    assert outcome_of(Response(200, b"{}")) == "200"
    assert outcome_of(Response(502, b"<html>")) == "502"
    assert is_refusal("503 range_moved") and is_refusal("404 not_found")
    assert not is_refusal("503 shard_unavailable") and not is_refusal("timeout")


def test_the_mix_picks_each_operation_by_its_weight() -> None:
    import random

    rng = random.Random(1)
    picks = [Mix(get=0.5, history=0.1, patch=0.2, create=0.1, send=0.1).pick(rng) for _ in range(10_000)]
    assert abs(picks.count("get") / 10_000 - 0.5) < 0.03
    assert abs(picks.count("history") / 10_000 - 0.1) < 0.02
    assert abs(picks.count("send") / 10_000 - 0.1) < 0.02


def test_the_default_mix_is_four_reads_to_one_write() -> None:
    mix = Mix()
    assert round(mix.get + mix.history, 6) == 0.8
    assert round(mix.patch + mix.create + mix.send, 6) == 0.2


def test_the_report_renders_every_section() -> None:
    data = {
        "started_at": "2026-12-03T14:00:00+00:00", "command": "make bench-reshard-smoke",
        "config": {"users": 20_000, "connections": 32, "rate": 200.0, "workers": 2,
                   "mix": {"get": 0.5, "patch": 0.35, "create": 0.15}},
        "shards_before": 5, "seed_seconds": 0.4, "moved_fraction": 0.1526, "machine": "2 cores",
        "failure": None,
        "targets": switch_targets([_latency_row("switch", MOVING, 800, 900)], 0, True, 0),
        "phases": [{"name": "switch", "start": 9.0, "end": 9.5}],
        "latency": [_latency_row("switch", MOVING, 800, 900) | {"requests": 10, "p50_ms": 5.0}],
        "throughput": [{"window": "idle", "seconds": 8.0, "requests": 1600, "rps": 200.0,
                        "server_cpu_us_per_request": 2000.0, "server_cpu_cores": 0.4}],
        "errors": {MOVING: {"503 range_moved": 2}},
        "ledger": {"ids": 10, "acknowledged": 20, "uncertain": 0, "checked": 10, "lost": 0, "lost_moving": 0,
                   "lost_samples": []},
        "rows": {"before": {"shard_0": {"users": 100}}, "after": {"shard_0": {"users": 85}, "shard_5": {"users": 15}}},
        "moved_rows": {"users": 15},
        "workflow_findings": {"switch": {"frozen_s": 0.4, "steps": {"turn_around": 0.3}}},
        "references": {"ok": True},
    }
    text = render_markdown(data)
    for part in ("## Targets", "switch: moving-key write p99", "## Phases", "| switch | write | moving |",
                 "503 range_moved", "## Rows per shard", "100 → 85", "0 → 15", "| users | 15 |", "clean",
                 "reshard.png", "make bench-reshard-smoke",
                 "held for 0.40 s", "| turn_around | 0.300 |"):
        assert part in text, part


def test_the_report_shows_messages_stale_reads_and_misplaced_rows_when_the_run_has_them() -> None:
    data = {
        "started_at": "2026-12-04T14:00:00+00:00", "command": "make bench-reshard-smoke",
        "config": {"users": 20_000, "connections": 32, "rate": 200.0, "workers": 2, "mix": {"get": 1.0}},
        "shards_before": 5, "seed_seconds": 0.4, "moved_fraction": 0.1526, "machine": "2 cores",
        "failure": None, "targets": [], "phases": [], "latency": [], "throughput": [], "errors": {},
        "ledger": {"ids": 1, "acknowledged": 1, "uncertain": 0, "checked": 1, "lost": 0, "lost_moving": 0,
                   "lost_samples": []},
        "rows": {"before": {}, "after": {}}, "moved_rows": {}, "references": {"ok": True},
        "chat": {"accounts": 40, "follows": 200, "conversations": 8, "messages_seeded": 1000, "setup_seconds": 3.0},
        "messages": {"seeded": 1000, "sent": 250, "unanswered": 1, "rejected": 2, "conversations": 8,
                     "checked": 1250, "lost": 0, "lost_moving": 0, "duplicated": 0, "unreadable": [],
                     "samples": []},
        "stale_reads": {"count": 1, "samples": ["user u: read 'a', acknowledged ['b']"]},
        "misplaced": {"shard_0": {"users": 0, "messages": 0}, "shard_5": {"users": 0, "messages": 0}},
    }
    text = render_markdown(data)
    for part in ("40 accounts, 200 follows, 8 groups and 1,000 messages", "## Acknowledged messages",
                 "| 1,000 | 250 | 1 | 2 | 8 | 1,250 | 0 | 0 | 0 |", "## Stale reads", "read 'a'",
                 "| table | shard_0 | shard_5 |", "| messages | 0 | 0 |", "0 in all"):
        assert part in text, part


def test_the_phase_clock_ends_each_phase_where_the_next_starts_and_the_last_at_the_finish() -> None:
    clock = PhaseClock(origin=0.0)
    assert clock.current == "idle"
    clock.starts += [("servers", 10.0), ("copy", 12.0), ("switch", 20.0)]
    assert clock.current == "switch"
    assert clock.phases(end=30.0) == [("servers", 10.0, 12.0), ("copy", 12.0, 20.0), ("switch", 20.0, 30.0)]
    clock.finished = 25.0
    assert clock.current == "done" and clock.phases(end=30.0)[-1] == ("switch", 20.0, 25.0)
    clock.error = "NotCaughtUp"
    assert clock.current == "failed"


def test_the_hold_is_the_stretch_of_the_switch_between_its_preparation_and_its_turn_around() -> None:
    steps = {"prepare_reverse": 0.3, "connect": 0.1, "freeze": 0.05, "wait_for_writers": 0.05,
             "catch_up_and_counts": 0.2, "publish": 0.05, "fence_moved": 0.05, "turn_around": 0.4}
    held = hold_window([("verify", 5.0, 9.0), ("switch", 9.0, 10.2)], steps)
    assert held is not None and held.name == "hold"
    assert (round(held.start, 3), round(held.end, 3)) == (9.4, 9.8)
    assert hold_window([("switch", 9.0, 10.0)], {"freeze": 0.1}) is None  # an older run's steps


def test_other_keys_are_judged_in_the_hold_when_it_is_known() -> None:
    latency = [
        _latency_row("switch", MOVING, 800, 900), _latency_row("switch", OTHER, 400, 500),
        _latency_row("hold", OTHER, 40, 50), _latency_row("idle", OTHER, 30, 40),
    ]
    met = {t["target"]: t["met"] for t in switch_targets(latency, lost=0, references_ok=True, unexpected=0)}
    assert met["hold: other-key write p99"] is True and "switch: other-key write p99" not in met
