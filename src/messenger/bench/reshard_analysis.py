"""What a resharding run under load measured: pure functions over its samples, and the report.

The load (bench/reshard_load.py) records one `Sample` per request, the run
(bench/reshard_run.py) the workflow's phase boundaries and the server's CPU over time; this
module turns them into the figures issue 12 asks for, with no I/O except `render_markdown`'s
text: latency of moving keys against the others per phase window, errors by status, req/s and
server CPU per request per window. Everything here is tested without servers
(tests/unit/bench/test_reshard_analysis.py).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from messenger.bench.phase import LatencySummary
from messenger.storage.resharding.plan import ReshardPlan
from messenger.storage.resharding.switch import BEFORE_HOLD_STEPS, HELD_STEPS
from messenger.storage.shards.ring import ring_position

MOVING, OTHER, UNKNOWN = "moving", "other", "unknown"
"""A request's key class: its key is in a range the reshard moves, or not, or the request
failed before the key was known (a create that got no id back)."""
WRITE_OPS = ("patch", "create", "send")
READ_OPS = ("get", "history")
BOUNDED_RETRY = "503 range_moved"
"""The one error a write may get from a reshard: the router retried a frozen range for its
bound (3 s) and gave up. Anything else is a failure of the run."""
SWITCH_P99_GOAL_S = 1.0
SWITCH_MAX_GOAL_S = 3.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of the load."""

    start: float
    """Seconds since the load started."""
    latency: float
    """Seconds until the response (or the failure)."""
    op: str
    """get, history, patch, create or send."""
    key_class: str
    outcome: str
    """The status ("200"), the status and error code ("503 range_moved"), or a failure kind
    of the load generator ("timeout", "connect", "protocol")."""

    @property
    def ok(self) -> bool:
        return self.outcome in ("200", "201")

    @property
    def end(self) -> float:
        return self.start + self.latency


class MovingKeys:
    """Whether a key's ring position lies in a range the plan moves (bisect over the ranges)."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        ordered = sorted(ranges)
        self._starts = [lo for lo, _ in ordered]
        self._ends = [hi for _, hi in ordered]

    @classmethod
    def of_plan(cls, plan: ReshardPlan) -> MovingKeys:
        return cls(r for route in plan.routes for r in route.ranges)

    def position_moves(self, position: int) -> bool:
        at = bisect.bisect_right(self._starts, position) - 1
        return at >= 0 and position < self._ends[at]

    def key_class(self, key: str) -> str:
        return MOVING if self.position_moves(ring_position(key)) else OTHER


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of the run: a workflow phase, or idle before it, or after it."""

    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)

    def overlaps(self, sample: Sample) -> bool:
        """The request was in flight at some point of the window."""
        return sample.start < self.end and sample.end >= self.start


def windows(phases: Sequence[tuple[str, float, float]], load_end: float) -> list[Window]:
    """idle (load start to the first phase), each phase, after (last phase to load end)."""
    if not phases:
        return [Window("idle", 0.0, load_end)]
    out = [Window("idle", 0.0, phases[0][1])]
    out += [Window(name, start, end) for name, start, end in phases]
    out.append(Window("after", phases[-1][2], load_end))
    return out


HOLD = "hold"

REMOVAL = "remove "
"""Prefix of the phases (and windows) of the second workflow: the new shard removed again."""


def hold_window(
    phases: Sequence[tuple[str, float, float]], steps: dict[str, float], *, prefix: str = ""
) -> Window | None:
    """The stretch of the switch phase that held the moving ranges' writes, from its steps'
    seconds (they run one after another from the phase's start)."""
    switch = next((p for p in phases if p[0] == f"{prefix}switch"), None)
    if switch is None or not all(step in steps for step in HELD_STEPS):
        return None
    start = switch[1] + sum(steps.get(step, 0.0) for step in BEFORE_HOLD_STEPS)
    return Window(f"{prefix}{HOLD}", start, start + sum(steps[step] for step in HELD_STEPS))


def summary(samples: Iterable[Sample]) -> dict[str, Any]:
    """Latency summary (ms) of the requests that got an answer, and the count of all."""
    taken = list(samples)
    answered = [s.latency for s in taken if s.outcome[:1].isdigit()]
    return asdict(LatencySummary.of(answered)) | {"requests": len(taken)}


def latency_by_window(samples: Sequence[Sample], spans: Sequence[Window]) -> list[dict[str, Any]]:
    """Per window, writes and reads each split by key class."""
    rows = []
    for window in spans:
        inside = [s for s in samples if window.overlaps(s)]
        for kind, ops in (("write", WRITE_OPS), ("read", READ_OPS)):
            for key_class in (MOVING, OTHER):
                chosen = [s for s in inside if s.op in ops and s.key_class == key_class]
                rows.append({"window": window.name, "kind": kind, "keys": key_class} | summary(chosen))
    return rows


def errors_by_outcome(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """Failed requests counted by outcome, per key class."""
    counts: dict[str, Counter[str]] = {}
    for s in samples:
        if not s.ok:
            counts.setdefault(s.key_class, Counter())[s.outcome] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(counts.items())}


def unexpected_errors(samples: Iterable[Sample]) -> int:
    """Failures other than the bounded retry of a frozen range (and a GET's 404, which the
    load never asks for: every id it reads exists)."""
    return sum(1 for s in samples if not s.ok and s.outcome != BOUNDED_RETRY)


def cpu_between(cpu: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU seconds used between two moments, linearly interpolated from (time, total) samples."""
    if len(cpu) < 2 or end <= start:
        return None
    times = [t for t, _ in cpu]

    def at(moment: float) -> float:
        i = bisect.bisect_left(times, moment)
        if i <= 0:
            return cpu[0][1]
        if i >= len(cpu):
            return cpu[-1][1]
        (t0, c0), (t1, c1) = cpu[i - 1], cpu[i]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c1

    return max(at(end) - at(start), 0.0)


def throughput_by_window(
    samples: Sequence[Sample], spans: Sequence[Window], cpu: Sequence[tuple[float, float]]
) -> list[dict[str, Any]]:
    """Per window: answered req/s, and the server's CPU µs per answered request."""
    rows = []
    for window in spans:
        done = sum(1 for s in samples if s.ok and window.start <= s.end < window.end)
        used = cpu_between(cpu, window.start, window.end)
        rows.append({
            "window": window.name,
            "seconds": round(window.seconds, 3),
            "requests": done,
            "rps": done / window.seconds if window.seconds else 0.0,
            "server_cpu_us_per_request": used * 1e6 / done if used is not None and done else None,
            "server_cpu_cores": used / window.seconds if used is not None and window.seconds else None,
        })
    return rows


def switch_targets(latency: Sequence[dict[str, Any]], lost: int, references_ok: bool | None,
                   unexpected: int, *, removal: bool = False) -> list[dict[str, Any]]:
    """The issue's goals, each with the measured value and whether it was met; with `removal`
    those of the second switch (the new shard removed) too."""
    targets = held_targets(latency)
    if removal:
        targets += held_targets(latency, prefix=REMOVAL)
    targets.append(goal_row("lost acknowledged writes", lost, 0, "writes"))
    targets.append(goal_row("errors other than bounded retries", unexpected, 0, "requests"))
    targets.append({"target": "check references clean", "value": references_ok, "goal": True, "unit": "",
                    "met": references_ok})
    return targets


def held_targets(latency: Sequence[dict[str, Any]], *, prefix: str = "") -> list[dict[str, Any]]:
    """One switch's goals: moving-key writes within the bounds, other keys as when idle."""
    def row(window: str, kind: str, keys: str) -> dict[str, Any] | None:
        for r in latency:
            if (r["window"], r["kind"], r["keys"]) == (window, kind, keys):
                return r
        return None

    switch, hold = f"{prefix}switch", f"{prefix}{HOLD}"
    moving = row(switch, "write", MOVING)
    other, idle = row(hold, "write", OTHER) or row(switch, "write", OTHER), row("idle", "write", OTHER)
    targets: list[dict[str, Any]] = []
    if moving is not None and moving["count"]:
        targets.append(goal_row(f"{switch}: moving-key write p99", moving["p99_ms"] / 1000, SWITCH_P99_GOAL_S, "s"))
        targets.append(goal_row(f"{switch}: moving-key write max", moving["max_ms"] / 1000, SWITCH_MAX_GOAL_S, "s"))
    else:
        targets.append({"target": f"{switch}: moving-key writes measured", "value": 0, "goal": "> 0",
                        "unit": "", "met": False})
    if other is not None and idle is not None and other["count"] and idle["count"]:
        # "Other keys did not wait": their p99 during the switch within 2x their idle p99 (or 50 ms).
        goal = max(2 * idle["p99_ms"], idle["p99_ms"] + 50) / 1000
        targets.append(goal_row(f"{other['window']}: other-key write p99", other["p99_ms"] / 1000, goal, "s"))
    return targets


def goal_row(name: str, value: float, goal: float, unit: str) -> dict[str, Any]:
    return {"target": name, "value": value, "goal": goal, "unit": unit, "met": value <= goal}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:.3f}"
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    """report.md of a run, from the same dict that goes to report.json."""
    out = [f"# Resharding under load ({data['started_at']})", ""]
    cfg = data["config"]
    out.append(
        f"`{data['command']}`: {cfg['users']:,} users seeded on {data['shards_before']} shards "
        f"(seeded in {data['seed_seconds']:.1f} s){_chat_line(data)}, {cfg['connections']} connections at "
        f"{cfg['rate']:,.0f} req/s offered ({', '.join(f'{op} {share:.0%}' for op, share in cfg['mix'].items())}), "
        f"API with {cfg['workers']} workers; "
        f"{data['moved_fraction']:.2%} of the key space moves. Machine: {data['machine']}."
    )
    out.append("")
    if data.get("failure"):
        out += [f"**The run failed: {data['failure']}**", ""]
    out += ["## Targets", "", markdown_table(
        ("target", "value", "goal", "met"),
        ((t["target"], t["value"], t["goal"], t["met"]) for t in data["targets"]),
    ), ""]
    out += ["## Phases (seconds from the start of the load)", "", markdown_table(
        ("phase", "start s", "end s", "seconds"),
        ((p["name"], p["start"], p["end"], p["end"] - p["start"]) for p in data["phases"]),
    ), ""]
    for key, which in (("workflow_findings", "the switch"), ("removal_findings", "the removal's switch")):
        switch = (data.get(key) or {}).get("switch", {})
        if switch.get("steps"):
            out += [f"Inside {which}, writes to the moving ranges held for {switch['frozen_s']:.2f} s:", "",
                    markdown_table(("step", "seconds"), switch["steps"].items()), ""]
    out += ["## Latency by window (ms; a request counts in every window it was in flight)", "", markdown_table(
        ("window", "kind", "keys", "requests", "answered", "p50", "p99", "max"),
        ((r["window"], r["kind"], r["keys"], r["requests"], r["count"], r["p50_ms"], r["p99_ms"], r["max_ms"])
         for r in data["latency"] if r["requests"]),
    ), ""]
    out += ["## Throughput and server CPU", "", markdown_table(
        ("window", "seconds", "answered", "req/s", "server CPU µs/req", "server cores busy"),
        ((r["window"], r["seconds"], r["requests"], r["rps"], r["server_cpu_us_per_request"],
          r["server_cpu_cores"]) for r in data["throughput"]),
    ), ""]
    errors = data["errors"]
    out += ["## Errors by outcome", ""]
    if errors:
        out.append(markdown_table(
            ("keys", "outcome", "count"),
            ((k, outcome, n) for k, by in errors.items() for outcome, n in by.items()),
        ))
    else:
        out.append("None: every request got its expected answer.")
    out.append("")
    ledger = data["ledger"]
    out += ["## Acknowledged writes, read back through the API", "", markdown_table(
        ("ids written", "acknowledged writes", "uncertain (no answer)", "checked", "lost", "of them on moving keys"),
        [(ledger["ids"], ledger["acknowledged"], ledger["uncertain"], ledger["checked"], ledger["lost"],
          ledger["lost_moving"])],
    ), ""]
    if ledger["lost_samples"]:
        out += ["Lost (sample): " + "; ".join(ledger["lost_samples"]), ""]
    out += _chat_sections(data)
    rows = data["rows"]
    tables = sorted({t for by in (rows["before"], rows["after"]) for shard in by.values() for t in shard})
    out += ["## Rows per shard (before → after)", "", markdown_table(
        ("table", *[str(s) for s in sorted(set(rows["before"]) | set(rows["after"]))]),
        ((t, *[f"{rows['before'].get(s, {}).get(t, 0):,} → {rows['after'].get(s, {}).get(t, 0):,}"
               for s in sorted(set(rows["before"]) | set(rows["after"]))]) for t in tables),
    ), ""]
    moved = data["moved_rows"]
    out += ["## Rows moved per table (deleted from the sources at clean-up)", ""]
    out.append(markdown_table(("table", "rows"), sorted(moved.items())) if moved else "none recorded")
    out.append("")
    refs = data["references"]
    out += ["## `messenger check references`", "",
            "clean" if refs.get("ok") else f"not clean: {refs}", ""]
    out += ["![latency over time](reshard.png)", ""]
    return "\n".join(out)


def _chat_line(data: dict[str, Any]) -> str:
    chat = data.get("chat")
    if not chat:
        return ""
    return (f", plus through the API {chat['accounts']:,} accounts, {chat['follows']:,} follows, "
            f"{chat['conversations']:,} groups and {chat['messages_seeded']:,} messages "
            f"({chat['setup_seconds']:.0f} s)")


def _chat_sections(data: dict[str, Any]) -> list[str]:
    """Messages read back, stale reads, and rows on a shard the final ring does not give them."""
    out: list[str] = []
    if messages := data.get("messages"):
        out += ["## Acknowledged messages, read back through every history", "", markdown_table(
            ("seeded", "sent in the load", "no answer", "refused", "conversations", "checked", "lost",
             "of them on moving keys", "twice in a history"),
            [(messages["seeded"], messages["sent"], messages["unanswered"], messages["rejected"],
              messages["conversations"], messages["checked"], messages["lost"], messages["lost_moving"],
              messages["duplicated"])],
        ), ""]
        if messages["samples"] or messages["unreadable"]:
            out += ["Sample: " + "; ".join(messages["samples"] + messages["unreadable"]), ""]
    if stale := data.get("stale_reads"):
        out += ["## Stale reads", "",
                f"{stale['count']:,} reads returned less than what their reader had been acknowledged "
                "(a user's name older than its last acknowledged rename, or a history page without the "
                "reader's last message in its span).", ""]
        if stale["samples"]:
            out += ["Sample: " + "; ".join(stale["samples"]), ""]
    if (misplaced := data.get("misplaced")) is not None:
        tables = sorted({t for by in misplaced.values() for t in by})
        total = misplaced_total(misplaced)
        out += ["## Rows on a shard the final ring does not give them", "",
                f"{total:,} in all (a key has one owner, so none is on two shards either).", "",
                markdown_table(("table", *misplaced), ((t, *(by.get(t, 0) for by in misplaced.values()))
                                                       for t in tables)), ""]
    return out


def misplaced_total(misplaced: dict[str, dict[str, int]]) -> int:
    """All rows, of every table and shard, on a shard the ring does not give them."""
    return sum(n for by in misplaced.values() for n in by.values())
