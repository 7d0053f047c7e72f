"""A finished (or stopped) reshard as a person reads it: a terminal table, and report.md,
report.json and distribution.png beside the workflow's state. No DSN is written: they hold
the shards' passwords."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from messenger.bench.charts import pyplot, save
from messenger.storage.resharding.workflow import WorkflowState

PHASE_ORDER = ("copy", "verify", "switch", "cleanup")


def report_json(state: WorkflowState) -> dict[str, Any]:
    plan = state.plan
    findings = state.findings
    return {
        "id": state.id,
        "kind": plan.kind,
        "phase": state.phase,
        "epoch": {"from": plan.old.epoch, "to": plan.new.epoch},
        "shards": {"from": [s.name for s in plan.old.shards], "to": [s.name for s in plan.new.shards]},
        "moved_fraction": plan.moved_fraction,
        "routes": [
            {"source": r.source, "target": r.target, "ranges": len(r.ranges), "fraction": r.fraction}
            for r in plan.routes
        ],
        "phases": {p: _without(findings[p], "routes") for p in PHASE_ORDER if isinstance(findings.get(p), dict)},
        "verify_routes": findings.get("verify", {}).get("routes", []),
        "moving_rows": findings.get("moving", {}),
        "rows_before": findings.get("before", {}),
        "rows_after": findings.get("after", {}),
        "progress": findings.get("progress"),
    }


def _without(found: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k not in keys}


def phase_table(state: WorkflowState) -> Table:
    table = Table(title=f"{state.id}: {state.plan.kind}, phase {state.phase}")
    for column in ("phase", "seconds", "what it found"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for phase in PHASE_ORDER:
        found = state.findings.get(phase)
        if isinstance(found, dict):
            table.add_row(phase, f"{found.get('seconds', 0):.1f}", _found(phase, found))
        elif phase == state.phase and state.phase not in ("done", "rolled_back"):
            table.add_row(phase, "…", _in_progress(state.findings.get("progress")))
    return table


def _found(phase: str, found: dict[str, Any]) -> str:
    if phase == "copy":
        return f"{found.get('tables', 0)} tables streaming, {found.get('rows', 0):,} rows copied"
    if phase == "verify":
        return f"{found.get('rows', 0):,} rows verified, no difference"
    if phase == "switch":
        if found.get("resumed_after_publish"):
            return "resumed after the topology went out: sources fenced"
        return f"writes to the moving ranges held {found.get('frozen_s', 0) * 1000:.0f} ms"
    deleted = found.get("deleted", {})
    return f"{sum(deleted.values()):,} moved rows deleted from the sources"


def _in_progress(progress: dict[str, Any] | None) -> str:
    if not progress:
        return "running"
    rows = progress.get("rows", {})
    done, whole = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
    eta = progress.get("eta_s")
    return (f"{progress.get('tables_ready')}/{progress.get('tables')} tables, {done:,}/{whole:,} rows"
            + (f", about {eta:.0f} s left" if eta else "") + f" (at {progress.get('at')})")


def distribution_table(state: WorkflowState) -> Table | None:
    before, after = state.findings.get("before"), state.findings.get("after")
    if not before:
        return None
    table = Table(title="rows per shard (every sharded table)")
    for column in ("shard", "before", "after"):
        table.add_column(column, justify="left" if column == "shard" else "right")
    for shard in sorted(set(before) | set(after or {})):
        table.add_row(shard, f"{sum(before.get(shard, {}).values()):,}",
                      f"{sum(after[shard].values()):,}" if after and shard in after else "–")
    return table


def write_report(state: WorkflowState, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = report_json(state)
    written = [directory / "report.json", directory / "report.md"]
    written[0].write_text(json.dumps(data, indent=2))
    written[1].write_text(_markdown(data))
    if data["rows_before"]:
        chart = directory / "distribution.png"
        _distribution_chart(data["rows_before"], data["rows_after"], chart)
        written.append(chart)
    return written


def _markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# Reshard {data['id']}: {data['kind']}",
        "",
        f"Shards {', '.join(data['shards']['from'])} → {', '.join(data['shards']['to'])}, epoch "
        f"{data['epoch']['from']} → {data['epoch']['to']}; {data['moved_fraction']:.2%} of the key space "
        f"moves over {len(data['routes'])} routes. Phase now: **{data['phase']}**.",
        "",
        "| phase | seconds | found |",
        "| --- | ---: | --- |",
    ]
    for phase, found in data["phases"].items():
        lines.append(f"| {phase} | {found.get('seconds', 0):.1f} | {_found(phase, found)} |")
    if data["moving_rows"]:
        lines += ["", "| table | rows moved |", "| --- | ---: |"]
        lines += [f"| {t} | {n:,} |" for t, n in data["moving_rows"].items()]
    if data["rows_before"]:
        lines += ["", "| shard | rows before | rows after |", "| --- | ---: | ---: |"]
        after = data["rows_after"] or {}
        for shard in sorted(set(data["rows_before"]) | set(after)):
            b = sum(data["rows_before"].get(shard, {}).values())
            a = f"{sum(after[shard].values()):,}" if shard in after else "–"
            lines.append(f"| {shard} | {b:,} | {a} |")
        lines += ["", "![rows per shard before and after](distribution.png)"]
    for route in data["verify_routes"]:
        for diff in route.get("diffs", []):
            lines.append(f"- {route['source']} → {route['target']} {diff['table']} {diff['range']}: "
                         f"{diff['missing']} missing, {diff['extra']} extra, {diff['different']} different")
    return "\n".join(lines) + "\n"


def _distribution_chart(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], path: Path) -> None:
    plt = pyplot()
    shards = sorted(set(before) | set(after))
    xs = range(len(shards))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(shards) + 2), 4))
    ax.bar([x - 0.2 for x in xs], [sum(before.get(s, {}).values()) for s in shards], 0.4, label="before")
    if after:
        ax.bar([x + 0.2 for x in xs], [sum(after.get(s, {}).values()) for s in shards], 0.4, label="after")
    ax.set_xticks(list(xs), shards)
    ax.set_ylabel("rows (every sharded table)")
    ax.set_title("Rows per shard before and after the reshard")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)
