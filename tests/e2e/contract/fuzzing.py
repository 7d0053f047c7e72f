"""Run schemathesis's engine (the same phases as `schemathesis run`: examples, coverage,
fuzzing, stateful) over a loaded schema and sum up what it did and found."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import schemathesis
from schemathesis.engine import events


@dataclass
class Finding:
    operation: str
    check: str
    title: str
    message: str
    reproduce: str
    status: int | None = None
    answer: str = ""


@dataclass
class FuzzReport:
    seed: int
    seconds: float = 0.0
    stop_reason: str = ""
    operations: set[str] = field(default_factory=set)
    cases_by_phase: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    checks_run: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    filtered: int = 0
    errors: list[str] = field(default_factory=list)

    def figures(self) -> str:
        phases = ", ".join(f"{name} {n}" for name, n in self.cases_by_phase.items())
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(self.statuses.items()))
        return (
            f"schemathesis {schemathesis.SCHEMATHESIS_VERSION}, seed {self.seed}: "
            f"{len(self.operations)} operations, {sum(self.cases_by_phase.values())} cases "
            f"({phases}), {self.requests} requests, {self.checks_run} checks, "
            f"{len(self.findings)} findings ({self.filtered} state-dependent refusals set aside), "
            f"{len(self.errors)} errors, {self.seconds:.1f} s "
            f"({self.stop_reason})\nstatuses {statuses}"
        )

    def failures(self) -> str:
        seen: set[tuple[str, str, str]] = set()
        lines = []
        for f in self.findings:
            key = (f.operation, f.check, f.title)
            if key in seen:
                continue
            seen.add(key)
            message = f.message.strip().replace("\n", "\n    ")
            lines.append(f"- {f.operation} [{f.check}] {f.title}: {message}\n    {_clip(f.reproduce)}"
                         f"\n    -> {f.status} {_clip(f.answer, 300)}")
        return "\n".join([*lines, *(f"- error: {e}" for e in self.errors)])


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def run(schema: schemathesis.BaseSchema) -> FuzzReport:
    report = FuzzReport(seed=schema.config.seed)
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _record(report, event.phase.value, event.recorder)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            report.seconds = event.running_time
            report.stop_reason = event.stop_reason.value
            for failure in event.failures:
                report.findings.append(Finding(failure.operation or "", "after_run", failure.title,
                                               failure.message, ""))
    return report


def _record(report: FuzzReport, phase: str, recorder: object) -> None:
    cases = recorder.cases  # type: ignore[attr-defined]
    report.cases_by_phase[phase] += len(cases)
    for node in cases.values():
        report.operations.add(node.value.operation.label)
    for interaction in recorder.interactions.values():  # type: ignore[attr-defined]
        report.requests += 1
        if interaction.response is not None:
            report.statuses[interaction.response.status_code] += 1
    for case_id, checks in recorder.checks.items():  # type: ignore[attr-defined]
        for check in checks:
            report.checks_run += 1
            if check.failure_info is None:
                continue
            info = check.failure_info
            operation = cases[case_id].value.operation.label if case_id in cases else ""
            reproduce = info.steps[-1].curl if info.steps else info.code_sample
            interaction = recorder.interactions.get(case_id)  # type: ignore[attr-defined]
            response = interaction.response if interaction is not None else None
            report.findings.append(Finding(
                operation, check.name, info.failure.title, info.failure.message, reproduce,
                response.status_code if response is not None else None,
                response.content.decode(errors="replace") if response is not None and response.content else "",
            ))
    report.filtered += sum(recorder.filtered_failures.values())  # type: ignore[attr-defined]
