"""One fault's result, the verdict, and the run's report: a rich table, report.md, report.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from messenger.chaos.window import ErrorWindow


@dataclass(slots=True)
class FaultResult:
    name: str
    description: str
    target: str
    confined_to: list[str] | None
    hold_s: float
    window: ErrorWindow
    recovery_s: float = 0.0
    """Time the recover step took (a restart, a respawn)."""
    phase_s: float = 0.0
    """The phase under load the window covers: warm-up to the pause before verification."""
    writes_checked: int = 0
    lost_writes: int = 0
    lost_samples: list[str] = field(default_factory=list)
    ws_expected: int = 0
    ws_missing: int = 0
    """Missing after every session reconnected and resumed (must be 0)."""
    ws_missing_live: int = 0
    """Missing on the sockets as they were, before that forced resume (a live gap the
    client could not see: it only shows if no later event of the conversation came)."""
    ws_reconnects: int = 0
    backlog_pending: int = 0
    backlog_dead: int = 0
    backlog_drained_s: float | None = None
    references_ok: bool = False
    references_detail: str = ""
    evidence: str = ""
    """What the fault looked like at the end of its hold (see Fault.evidence)."""
    harness_error: str = ""
    """Set when the fault itself could not be injected or undone: the rest is then partial."""

    @property
    def unexpected_shards(self) -> dict[str, int]:
        return self.window.unexpected_shards(self.confined_to)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.harness_error:
            found.append(f"harness: {self.harness_error}")
        if self.unexpected_shards:
            found.append("errors outside the faulted shard: " + _counts(self.unexpected_shards))
        if self.lost_writes:
            found.append(f"{self.lost_writes} acknowledged write(s) lost")
        if self.ws_missing:
            found.append(f"{self.ws_missing} WebSocket message(s) missing after resume")
        if self.backlog_pending or self.backlog_drained_s is None:
            found.append(f"outbox not drained: {self.backlog_pending} pending")
        if self.backlog_dead:
            found.append(f"{self.backlog_dead} dead letter(s)")
        if not self.references_ok:
            found.append(f"check references: {self.references_detail}")
        return found

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "target": self.target,
            "confined_to": self.confined_to, "hold_s": self.hold_s,
            "recovery_s": round(self.recovery_s, 2), "phase_s": round(self.phase_s, 2),
            "window": self.window.to_json(),
            "unexpected_shards": self.unexpected_shards,
            "writes_checked": self.writes_checked, "lost_writes": self.lost_writes,
            "lost_samples": self.lost_samples, "ws_expected": self.ws_expected,
            "ws_missing": self.ws_missing, "ws_missing_live": self.ws_missing_live,
            "ws_reconnects": self.ws_reconnects,
            "backlog_pending": self.backlog_pending, "backlog_dead": self.backlog_dead,
            "backlog_drained_s": self.backlog_drained_s, "references_ok": self.references_ok,
            "references_detail": self.references_detail, "evidence": self.evidence,
            "harness_error": self.harness_error,
            "passed": self.passed, "problems": self.problems,
        }


@dataclass(slots=True)
class RunReport:
    started_utc: str
    config: dict[str, Any]
    results: list[FaultResult] = field(default_factory=list)
    finished_utc: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "started_utc": self.started_utc, "finished_utc": self.finished_utc,
            "config": self.config, "passed": self.passed, "notes": self.notes,
            "faults": [r.to_json() for r in self.results],
        }


COLUMNS = (
    "fault", "target", "error window", "failed / requests", "errors by shard", "lost writes",
    "WS missing", "backlog", "references", "verdict",
)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def window_text(window: ErrorWindow) -> str:
    if window.first_s is None or window.last_s is None:
        return "no errors"
    return f"{window.first_s:+.1f} … {window.last_s:+.1f} s ({window.duration_s:.1f} s)"


def row(result: FaultResult) -> list[str]:
    """The table's cells for one fault, shared by the terminal and report.md."""
    w = result.window
    backlog = f"{result.backlog_pending} pending, {result.backlog_dead} dead"
    if result.backlog_drained_s is not None:
        backlog += f" ({result.backlog_drained_s:.1f} s)"
    return [
        result.name,
        result.target,
        window_text(w),
        f"{w.failed} / {w.requests}",
        _counts(w.by_shard),
        f"{result.lost_writes} of {result.writes_checked}",
        f"{result.ws_missing} of {result.ws_expected}",
        backlog,
        "clean" if result.references_ok else result.references_detail,
        "pass" if result.passed else "FAIL",
    ]


def results_table(results: list[FaultResult], title: str = "chaos") -> Table:
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column)
    for result in results:
        cells = row(result)
        cells[-1] = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
        table.add_row(*cells)
    return table


def render_markdown(report: RunReport) -> str:
    lines = [
        f"# Chaos run {report.started_utc}",
        "",
        f"Finished {report.finished_utc or '(not finished)'}; verdict: "
        f"**{'pass' if report.passed else 'FAIL'}**.",
        "",
        "Config: " + ", ".join(f"{k} = {v}" for k, v in report.config.items()),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row(r)) + " |" for r in report.results]
    lines.append("")
    lines.append("Error window: first to last failed request, seconds after the fault was injected.")
    lines.append("")
    for result in report.results:
        w = result.window
        lines.append(f"## {result.name}: {result.description}")
        lines.append("")
        rate = w.requests / result.phase_s if result.phase_s else 0.0
        lines.append(f"- target: {result.target}; held {result.hold_s:.0f} s; "
                     f"recover step {result.recovery_s:.1f} s; phase {result.phase_s:.0f} s "
                     f"under load, {rate:.0f} requests/s")
        if result.evidence:
            lines.append(f"- at the end of the hold: {result.evidence}")
        lines.append(f"- errors by operation: {_counts(w.by_op)}; by kind: {_counts(w.by_error)}; "
                     f"distinct keys with errors: {w.failed_keys}")
        allowed = "any" if result.confined_to is None else ", ".join(result.confined_to)
        lines.append(f"- shards allowed to see errors: {allowed}; outside them: "
                     f"{_counts(result.unexpected_shards)}")
        lines.append(f"- WebSocket reconnects during the fault: {result.ws_reconnects}; missing "
                     f"on the live sockets before a final resume: {result.ws_missing_live}")
        for sample in result.lost_samples:
            lines.append(f"- lost: {sample}")
        for problem in result.problems:
            lines.append(f"- **problem**: {problem}")
        lines.append("")
    if report.notes:
        lines.append("## Notes")
        lines.append("")
        lines += [f"- {note}" for note in report.notes]
        lines.append("")
    return "\n".join(lines)


def write_report(report: RunReport, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.md").write_text(render_markdown(report))
    (run_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
