"""Ratios, targets and comparison in the report, from hand-made results."""

from __future__ import annotations

from typing import Any

import pytest

from messenger.bench.report import compare, compute_ratios, evaluate_targets, render_markdown


def _phase(scenario: str, connections: int, rps: float, p99: float = 5.0) -> dict[str, Any]:
    latency = {
        "count": 100,
        "mean_ms": 1.0,
        "p50_ms": 1.0,
        "p95_ms": 2.0,
        "p99_ms": p99,
        "p999_ms": p99,
        "max_ms": p99,
    }
    return {
        "scenario": scenario,
        "connections": connections,
        "rps": rps,
        "success_pct": 100.0,
        "latency": latency,
        "errors": {},
        "error_samples": {},
        "generator_cpu_share": 0.3,
        "generator_core_share": 0.25,
    }


def _report(*phases: dict[str, Any]) -> dict[str, Any]:
    return {
        "started_at": "now",
        "target": "http://x",
        "server": "api",
        "shards": 3,
        "machine": {"cores": 2, "platform": "linux", "python": "3.11"},
        "config": {"duration": 1},
        "phases": list(phases),
        "ceilings": {
            "pgbench": [
                {
                    "workload": "select",
                    "path": "pgbouncer",
                    "tps": 10_000.0,
                    "per_shard_tps": {},
                    "clients_per_shard": 1,
                    "errors": [],
                },
                {
                    "workload": "insert",
                    "path": "pgbouncer",
                    "tps": 5_000.0,
                    "per_shard_tps": {},
                    "clients_per_shard": 1,
                    "errors": [],
                },
            ],
            "empty_handler": [{"connections": 100, "rps": 20_000.0, "wrk_rps": 40_000.0}],
        },
    }


def test_ratios_divide_each_phase_by_each_ceiling_of_the_run() -> None:
    (ratio,) = compute_ratios(_report(_phase("read", 100, 4_000.0)))
    assert ratio["pgbench_select_pgbouncer"] == pytest.approx(0.4)
    assert ratio["pgbench_insert_pgbouncer"] == pytest.approx(0.8)
    assert ratio["empty_handler_same_generator"] == pytest.approx(0.2)
    assert ratio["empty_handler_wrk"] == pytest.approx(0.1)
    assert ratio["pgbench_select_direct"] is None


def _costed(scenario: str, rps: float, cpu_us: float) -> dict[str, Any]:
    return _phase(scenario, 100, rps) | {"extra": {"server_cpu_us_per_request": cpu_us}}


def test_a_warm_cache_is_judged_against_twice_the_bare_stack_and_a_miss_says_by_how_much() -> None:
    report = _report(_costed("read", 3_000.0, 300.0), _costed("read-bare", 2_000.0, 250.0))
    (get,) = [t for t in evaluate_targets(report) if t["target"].startswith("GET by id")]
    assert "warm cache" in get["target"] and get["goal"] == 2.0
    assert get["met"] is False and get["missed_by"] == pytest.approx(0.5)


def test_the_miss_path_is_judged_on_throughput_and_cpu_against_the_bare_stack() -> None:
    report = _report(_costed("read", 2_100.0, 300.0), _costed("read-bare", 2_000.0, 250.0)) | {"cache": "off"}
    throughput, cpu = [t for t in evaluate_targets(report) if t["target"].startswith("GET by id")]
    assert throughput["met"] is True and throughput["value"] == pytest.approx(1.05)
    assert cpu["met"] is False and cpu["missed_by"] == pytest.approx(0.2)


def test_a_success_rate_just_below_the_goal_does_not_read_as_met() -> None:
    mixed = _phase("mixed", 10_000, 1_500.0) | {"success_pct": 99.998}
    report = _report(mixed)
    report["targets"] = evaluate_targets(report)
    report["ratios"] = compute_ratios(report)
    assert "| 99.998 % | 100.000 % | no, missed by 0.002 % |" in render_markdown(report)


def test_targets_without_their_phase_are_not_measured() -> None:
    assert all(t["met"] is None for t in evaluate_targets(_report()))


def test_comparison_pairs_scenario_and_level() -> None:
    now = _report(_phase("mixed", 100, 1_100.0), _phase("mixed", 1_000, 900.0))
    before = _report(_phase("mixed", 100, 1_000.0))
    (row,) = compare(now, before)
    assert (row["connections"], row["rps_change"]) == (100, pytest.approx(0.1))


def test_markdown_has_every_section() -> None:
    report = _report(_phase("read", 100, 4_000.0))
    report["ratios"] = compute_ratios(report)
    report["targets"] = evaluate_targets(report)
    text = render_markdown(report)
    for heading in ("## Results", "## Ceilings", "## Ours as a ratio", "## Targets"):
        assert heading in text


def test_targets_are_not_judged_on_the_fake_server() -> None:
    report = _report(_phase("read", 100, 9_000.0))
    report["server"] = "fake"
    assert all(t["met"] is None for t in evaluate_targets(report))


def _percentiles(p99: float) -> dict[str, Any]:
    return {"count": 10, "mean_ms": 1.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": p99, "p999_ms": p99, "max_ms": p99}


def test_the_messaging_open_loop_step_is_judged_on_delivery_from_the_due_time_and_history_pages() -> None:
    report = _report(_phase("read", 100, 4_000.0))
    report["messaging_open_loop"] = {
        "send_rate": 100.0, "history_rate": 41.7, "duration_s": 10.0, "connected": 256, "sockets": 1_000,
        "accounts": 250, "groups": 50, "fraction": 0.5, "closed_loop_send_max": 200.0,
        "latency": {"send": _percentiles(30.0), "history": _percentiles(12.0)},
        "success_pct": {"send": 100.0, "history": 100.0},
        "delivery": {"expected": 50, "matched": 50, "missing": 0, "latency": _percentiles(20.0)},
        "delivery_from_due": _percentiles(45.0), "errors": {},
    }
    targets = {t["target"]: t for t in evaluate_targets(report)}
    delivery = next(t for name, t in targets.items() if name.startswith("open loop: send → delivery"))
    assert delivery["value"] == 45.0 and delivery["met"]
    history = targets["open loop: history page p99 at that rate"]
    assert history["value"] == 12.0 and not history["met"] and history["missed_by"] == 2.0
    report["targets"] = list(targets.values())
    report["ratios"] = compute_ratios(report)
    text = render_markdown(report)
    assert "## Messaging in open loop" in text and "| send due → frame on a socket | 10 |" in text
    assert "50% of the 200 sends/s" in text or "50 % of the 200 sends/s" in text
