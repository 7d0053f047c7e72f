"""The fault suite end to end with one cheap fault (kill -9 of a replica) on the session cluster."""

from __future__ import annotations

import json
from pathlib import Path

from messenger.chaos.runner import ChaosConfig, run_chaos
from messenger.cluster.local import LocalCluster


def test_a_replica_kill_under_load_loses_nothing_and_writes_the_report(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = ChaosConfig(
        faults=("replica-kill",), quick=True, out_root=tmp_path, shards=len(cluster.topology.shards),
        accounts=4, group_size=2, connections=4, warmup_s=2.0, hold_s=3.0, settle_s=1.0,
        max_total_s=120.0,
    )
    report, run_dir = run_chaos(config, cluster=cluster)

    data = json.loads((run_dir / "report.json").read_text())
    [fault] = data["faults"]
    assert fault["name"] == "replica-kill" and fault["target"] == "shard_1 replica"
    assert fault["window"]["requests"] > 0 and fault["writes_checked"] > 0
    assert fault["ws_expected"] > 0
    assert fault["problems"] == [], fault
    assert report.passed
    assert "| replica-kill |" in (run_dir / "report.md").read_text()
