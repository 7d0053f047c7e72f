"""The verdict of a fault and the report's table, markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from messenger.chaos.ledger import Outcome
from messenger.chaos.report import FaultResult, RunReport, results_table, row, write_report
from messenger.chaos.window import error_window


def _result(**overrides: object) -> FaultResult:
    window = error_window(
        [Outcome(10.5, "send", False, "shard_1", "c1", "503 shard_unavailable"),
         Outcome(11.0, "read", True, "shard_0", "u1")],
        10.0,
    )
    fields: dict[str, object] = {
        "name": "primary-kill", "description": "kill -9 of one shard's primary",
        "target": "shard_1 primary", "confined_to": ["shard_1"], "hold_s": 8.0, "window": window,
        "writes_checked": 120, "ws_expected": 300, "backlog_drained_s": 1.5,
        "references_ok": True, "references_detail": "clean",
    }
    fields.update(overrides)
    return FaultResult(**fields)  # type: ignore[arg-type]


def test_a_clean_recovery_passes() -> None:
    result = _result()
    assert result.passed and result.problems == []


def test_each_broken_promise_is_a_problem() -> None:
    result = _result(lost_writes=2, ws_missing=1, backlog_dead=3, references_ok=False,
                     references_detail="1 problem(s)")
    problems = " ".join(result.problems)
    assert not result.passed
    for phrase in ("2 acknowledged write(s) lost", "1 WebSocket message(s) missing",
                   "3 dead letter(s)", "check references: 1 problem(s)"):
        assert phrase in problems


def test_errors_on_another_shard_fail_a_confined_fault() -> None:
    window = error_window([Outcome(1.0, "read", False, "shard_2", error="503")], 0.0)
    result = _result(window=window)
    assert result.unexpected_shards == {"shard_2": 1}
    assert not result.passed


def test_an_outbox_that_never_drained_fails() -> None:
    assert not _result(backlog_pending=4, backlog_drained_s=None).passed


def test_the_row_shows_window_counts_and_verdict() -> None:
    cells = row(_result())
    assert cells[0] == "primary-kill"
    assert cells[2] == "+0.5 … +0.5 s (0.0 s)"
    assert cells[3] == "1 / 2"
    assert cells[4] == "shard_1 1"
    assert cells[5] == "0 of 120"
    assert cells[-1] == "pass"


def test_the_terminal_table_has_a_row_per_fault() -> None:
    console = Console(record=True, width=250)
    console.print(results_table([_result(), _result(name="replica-kill")]))
    text = console.export_text()
    assert "primary-kill" in text and "replica-kill" in text and "pass" in text


def test_write_report_writes_markdown_and_json(tmp_path: Path) -> None:
    report = RunReport(started_utc="2026-12-03T14:00:00+00:00", config={"quick": True},
                       results=[_result(), _result(name="partition", lost_writes=1)],
                       finished_utc="2026-12-03T14:05:00+00:00")
    write_report(report, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "| primary-kill |" in markdown and "**FAIL**" in markdown
    assert "1 acknowledged write(s) lost" in markdown
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["passed"] is False
    assert [f["passed"] for f in data["faults"]] == [True, False]
    assert data["faults"][0]["window"]["by_shard"] == {"shard_1": 1}
