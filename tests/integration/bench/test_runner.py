"""The whole harness on a tiny load: scenarios, ceilings, report files. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from messenger.bench.runner import SMOKE_SCENARIOS, run_benchmark, smoke_config


def test_harness_runs_end_to_end_and_writes_a_complete_report(cluster, tmp_path: Path) -> None:
    config = smoke_config(
        topology_path=cluster.topology_path,
        server="fake",
        levels=(4,),
        duration=1.0,
        ceiling_duration=1.0,
        pgbench_clients=2,
        workers=1,
        out_root=tmp_path,
    )
    run_dir = run_benchmark(config)

    report = json.loads((run_dir / "report.json").read_text())
    # The fake server has no messaging API: the messaging scenario is skipped there.
    assert [p["scenario"] for p in report["phases"]] == [
        s for s in SMOKE_SCENARIOS if s != "messaging"
    ]
    for phase in report["phases"]:
        assert phase["ok"] > 0, phase["scenario"]
        assert phase["success_pct"] == 100.0, (phase["scenario"], phase["error_samples"])
    assert {(r["workload"], r["path"]) for r in report["ceilings"]["pgbench"]} == {
        ("select", "direct"),
        ("select", "pgbouncer"),
        ("insert", "direct"),
        ("insert", "pgbouncer"),
    }
    assert all(r["tps"] > 0 and not r["errors"] for r in report["ceilings"]["pgbench"])
    assert report["ceilings"]["empty_handler"][0]["rps"] > 0
    assert len(report["distribution"]) == len(cluster.topology.shards)
    assert len(report["ratios"]) == len(report["phases"])
    for chart in ("latency.png", "timeline.png", "throughput.png", "distribution.png"):
        assert (run_dir / chart).stat().st_size > 0
    assert "## Ours as a ratio of each ceiling" in (run_dir / "report.md").read_text()


def test_second_run_is_compared_with_the_first(cluster, tmp_path: Path) -> None:
    config = smoke_config(
        topology_path=cluster.topology_path,
        server="fake",
        scenarios=("crud",),
        levels=(2,),
        duration=0.5,
        ceilings=False,
        workers=1,
        out_root=tmp_path,
    )
    first = run_benchmark(config)
    (tmp_path / "20000101T000000Z").mkdir()  # an unrelated empty directory is ignored
    second = run_benchmark(config)
    report = json.loads((second / "report.json").read_text())
    assert report["previous"] == str(first)
    assert [(c["scenario"], c["connections"]) for c in report["comparison"]] == [("crud", 2)]


def test_harness_drives_the_real_api_with_every_body_valid(cluster, tmp_path: Path) -> None:
    config = smoke_config(
        topology_path=cluster.topology_path,
        server="api",
        scenarios=("crud", "read-heavy", "browse"),
        levels=(4,),
        duration=1.5,
        ceilings=False,
        workers=1,
        sample_ids=200,
        out_root=tmp_path,
    )
    report = json.loads((run_benchmark(config) / "report.json").read_text())
    for phase in report["phases"]:
        assert phase["ok"] > 0, (phase["scenario"], phase["error_samples"])
        assert phase["errors"]["validation"] == 0, phase["error_samples"]
        assert phase["errors"]["protocol"] == 0, phase["error_samples"]


def test_messaging_scenario_validates_every_response_and_samples_delivery(
    cluster, tmp_path: Path
) -> None:
    config = smoke_config(
        topology_path=cluster.topology_path,
        server="api",
        scenarios=("messaging",),
        levels=(4,),
        duration=2.0,
        ceilings=False,
        workers=2,
        sockets=8,
        messaging_users=6,
        group_size=3,
        out_root=tmp_path,
    )
    run_dir = run_benchmark(config)
    report = json.loads((run_dir / "report.json").read_text())
    (phase,) = report["phases"]
    assert phase["scenario"] == "messaging"
    assert phase["ok"] > 0, phase["error_samples"]
    assert set(phase["by_operation"]) <= {"send", "history", "inbox"}
    assert phase["by_operation"]["send"]["count"] > 0
    for kind in ("validation", "protocol", "status"):
        assert phase["errors"][kind] == 0, phase["error_samples"]
    delivery = phase["extra"]["delivery"]
    assert delivery["sockets"] == 8, delivery["socket_error_samples"]
    assert delivery["users"] == 6 and delivery["groups"] == 2
    assert delivery["latency"]["count"] > 0
    assert delivery["matched"] <= delivery["frames"]
    assert delivery["expected"] > 0
    # The delivery goal is judged in open loop (not run here); the closed-loop figures are shown.
    (target,) = [t for t in report["targets"] if "send → delivery" in t["target"]]
    assert target["value"] is None
    assert "## Message delivery" in (run_dir / "report.md").read_text()


def test_read_runs_on_the_bare_yardstick_too_with_cost_per_request(cluster, tmp_path: Path) -> None:
    config = smoke_config(
        topology_path=cluster.topology_path,
        server="api",
        scenarios=("read",),
        levels=(4,),
        duration=1.5,
        ceilings=False,
        workers=1,
        sample_ids=200,
        out_root=tmp_path,
    )
    run_dir = run_benchmark(config)
    report = json.loads((run_dir / "report.json").read_text())
    ours, bare = report["phases"]
    assert (ours["scenario"], bare["scenario"]) == ("read", "read-bare")
    for phase in (ours, bare):
        assert phase["ok"] > 0 and phase["success_pct"] == 100.0, phase["error_samples"]
        extra = phase["extra"]
        assert extra["server_cpu_us_per_request"] > 0
        # Counted at the PgBouncers: every GET is at least one database round trip.
        assert extra["db_round_trips_per_request"] >= 1.0
    # Ours reads the freshness marker; the bare stack never talks to Redis.
    assert ours["extra"]["redis_round_trips_per_request"] >= 1.0
    assert bare["extra"]["redis_round_trips_per_request"] < 0.5
    assert "Ours against the bare stack" in (run_dir / "report.md").read_text()
