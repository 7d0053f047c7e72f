"""The benchmark report: ratios to the ceilings, targets, comparison, report.json and report.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from messenger.bench import charts
from messenger.bench.open_loop import P99_GOAL_MS

REPORT_JSON = "report.json"
REPORT_MD = "report.md"

# Issue 14's goals, each a ratio or figure of one run; reported against, never asserted.
# pgbench and the empty handler stay as ceilings ("Ours as a ratio of each ceiling"), not goals.
WARM_VS_BARE_GOAL = 2.0
MISS_VS_BARE_GOAL = 1.0
MISS_CPU_VS_BARE_GOAL = 1.0
OPEN_LOOP_SHARE_GOAL = 0.70
SEND_BASELINE_RPS = 274.0
"""The messaging scenario's req/s (50 connections) when issue 14 was filed."""
SEND_THROUGHPUT_GOAL = 2.0
SEND_THROUGHPUT_LEVEL = 100
HEADLINE_LEVEL = 10_000
DELIVERY_P99_GOAL_MS = 50.0
DELIVERY_SOCKETS = 1_000
HISTORY_P99_GOAL_MS = 10.0


def _pgbench(report: dict[str, Any], workload: str, path: str) -> float:
    for r in report.get("ceilings", {}).get("pgbench", []):
        if r["workload"] == workload and r["path"] == path:
            return float(r["tps"])
    return 0.0


def _empty(report: dict[str, Any], connections: int) -> tuple[float, float]:
    """Empty-handler req/s at `connections` (or the nearest level): our generator, and wrk."""
    runs = report.get("ceilings", {}).get("empty_handler", [])
    if not runs:
        return 0.0, 0.0
    best = min(runs, key=lambda r: abs(r["connections"] - connections))
    return float(best.get("rps") or 0.0), float(best.get("wrk_rps") or 0.0)


def _ratio(value: float, ceiling: float) -> float | None:
    return value / ceiling if ceiling else None


def compute_ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every phase's req/s as a fraction of each ceiling measured in the same run."""
    select_bouncer = _pgbench(report, "select", "pgbouncer")
    select_direct = _pgbench(report, "select", "direct")
    insert_bouncer = _pgbench(report, "insert", "pgbouncer")
    insert_direct = _pgbench(report, "insert", "direct")
    out = []
    for p in report["phases"]:
        empty_ours, empty_wrk = _empty(report, p["connections"])
        ceilings = {
            "pgbench_select_pgbouncer": select_bouncer,
            "pgbench_select_direct": select_direct,
            "pgbench_insert_pgbouncer": insert_bouncer,
            "pgbench_insert_direct": insert_direct,
            "empty_handler_same_generator": empty_ours,
            "empty_handler_wrk": empty_wrk,
        }
        out.append(
            {
                "scenario": p["scenario"],
                "connections": p["connections"],
                "rps": p["rps"],
                **{name: _ratio(p["rps"], c) for name, c in ceilings.items()},
            }
        )
    return out


def _phase(
    report: dict[str, Any], scenario: str, level: int | None = None
) -> dict[str, Any] | None:
    candidates = [p for p in report["phases"] if p["scenario"] == scenario]
    if level is not None:
        candidates = [p for p in candidates if p["connections"] == level]
    return max(candidates, key=lambda p: p["rps"]) if candidates else None


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: value reached, goal, met or by how much it was missed."""
    targets: list[dict[str, Any]] = []
    # The fake server has no database behind it: its figures say nothing about the targets.
    applicable = report.get("server") != "fake"

    def add(name: str, value: float | None, goal: float, higher_is_better: bool, unit: str) -> None:
        if value is None or not applicable:
            targets.append({"target": name, "value": None, "goal": goal, "met": None, "unit": unit})
            return
        met = value >= goal if higher_is_better else value < goal
        gap = (goal - value) if higher_is_better else (value - goal)
        targets.append(
            {
                "target": name,
                "value": value,
                "goal": goal,
                "met": met,
                "unit": unit,
                "missed_by": None if met else gap,
            }
        )

    cache_on = report.get("cache", "on") != "off"
    for ours, bare in _bare_pairs(report["phases"]):
        level = f"{ours['connections']:,} connections"
        if cache_on:
            add(f"GET by id, warm cache, ours / bare req/s at {level}", _ratio(ours["rps"], bare["rps"]),
                WARM_VS_BARE_GOAL, True, "×")
            continue
        add(f"GET by id, miss path, ours / bare req/s at {level}", _ratio(ours["rps"], bare["rps"]),
            MISS_VS_BARE_GOAL, True, "×")
        ours_cpu = ours["extra"].get("server_cpu_us_per_request")
        bare_cpu = bare["extra"].get("server_cpu_us_per_request")
        add(f"GET by id, miss path, ours / bare CPU per request at {level}",
            _ratio(ours_cpu, bare_cpu) if ours_cpu and bare_cpu else None, MISS_CPU_VS_BARE_GOAL, False, "×")
    open_loop = report.get("open_loop") or {}
    if open_loop.get("steps"):
        best, top = open_loop["best_rate"], open_loop["closed_loop_max_rps"]
        add(f"open loop, {open_loop['connections']:,} connections: highest rate with p99 < {P99_GOAL_MS:g} ms "
            "and 100 % success, of the closed-loop maximum", (best or 0.0) / top if top else None,
            OPEN_LOOP_SHARE_GOAL, True, "share")
    messaging = _phase(report, "messaging", SEND_THROUGHPUT_LEVEL)
    add(f"messaging req/s at {SEND_THROUGHPUT_LEVEL} connections, of issue 14's {SEND_BASELINE_RPS:g} req/s",
        _ratio(messaging["rps"], SEND_BASELINE_RPS) if messaging else None, SEND_THROUGHPUT_GOAL, True, "×")
    step = report.get("messaging_open_loop")
    add(
        f"open loop: send → delivery p99 from the due time, {DELIVERY_SOCKETS:,} sockets, sends at half "
        "the closed-loop maximum",
        step["delivery_from_due"]["p99_ms"] if step and step["delivery_from_due"]["count"] else None,
        DELIVERY_P99_GOAL_MS,
        False,
        "ms",
    )
    add(
        "open loop: history page p99 at that rate",
        step["latency"]["history"]["p99_ms"] if step and step["latency"]["history"]["count"] else None,
        HISTORY_P99_GOAL_MS,
        False,
        "ms",
    )
    mixed = _phase(report, "mixed", HEADLINE_LEVEL)
    add(
        f"mixed 80/20 success at {HEADLINE_LEVEL:,} connections",
        mixed["success_pct"] if mixed else None,
        100.0,
        True,
        "%",
    )
    return targets


def find_previous(root: Path, current: Path) -> Path | None:
    """The newest earlier report directory under `root` (names are sortable timestamps)."""
    earlier = (
        sorted(
            d
            for d in root.iterdir()
            if d.is_dir() and d.name < current.name and (d / REPORT_JSON).is_file()
        )
        if root.is_dir()
        else []
    )
    return earlier[-1] if earlier else None


def compare(current: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Req/s and p99 change for every scenario and level present in both reports."""
    before = {(p["scenario"], p["connections"]): p for p in previous.get("phases", [])}
    out = []
    for p in current["phases"]:
        old = before.get((p["scenario"], p["connections"]))
        if old is None:
            continue
        out.append(
            {
                "scenario": p["scenario"],
                "connections": p["connections"],
                "rps": p["rps"],
                "previous_rps": old["rps"],
                "rps_change": _ratio(p["rps"] - old["rps"], old["rps"]),
                "p99_ms": p["latency"]["p99_ms"],
                "previous_p99_ms": old["latency"]["p99_ms"],
            }
        )
    return out


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def target_formatter(unit: str) -> Callable[[float], str]:
    if unit == "share":
        return lambda v: f"{v:.1%}"
    if unit == "×":
        return lambda v: f"{v:.2f}×"
    if unit == "%":  # a success rate: 99.998 % must not read as 100.00 %
        return lambda v: f"{v:.3f} %"
    return lambda v: f"{v:.2f} {unit}"


def _fmt_number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _bare_pairs(phases: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(ours, bare) for each level the bare-stack yardstick ran at, both with their costs."""
    measured = [p for p in phases if "server_cpu_us_per_request" in (p.get("extra") or {})]
    return [
        (ours, bare)
        for bare in measured
        if bare["scenario"].endswith("-bare")
        for ours in measured
        if ours["scenario"] == bare["scenario"].removesuffix("-bare") and ours["connections"] == bare["connections"]
    ]


def _cost_lines(report: dict[str, Any]) -> list[str]:
    """Server CPU and counted round trips per request, and ours against the bare stack."""
    phases = [p for p in report["phases"] if "server_cpu_us_per_request" in (p.get("extra") or {})]
    if not phases:
        return []
    lines = [
        "",
        "## Cost per request",
        "",
        (
            "Server CPU is the server processes' own user + system time over the phase "
            "(/proc/<pid>/stat of the process group) divided by the requests answered; round trips "
            "are counted at every PgBouncer (`SHOW STATS`) and at Redis (`INFO stats`) over the "
            "phase, background work included. `read-bare` is the bare-stack yardstick "
            "(bench/bare_app.py) under the same load right after ours."
        ),
        "",
        "| scenario | conns | req/s | server CPU µs/request | DB round trips/request | Redis round trips/request |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in phases:
        extra = p["extra"]
        lines.append(
            f"| {p['scenario']} | {p['connections']:,} | {p['rps']:,.0f} | "
            f"{_fmt_number(extra.get('server_cpu_us_per_request'))} | "
            f"{_fmt_number(extra.get('db_round_trips_per_request'), 2)} | "
            f"{_fmt_number(extra.get('redis_round_trips_per_request'), 2)} |"
        )
    pairs = _bare_pairs(phases)
    if pairs:
        lines += [
            "",
            "Ours against the bare stack (goal: throughput ≥ 1.0×, CPU per request ≤ 1.0×):",
            "",
            "| scenario | conns | req/s ours / bare | ratio | CPU µs ours / bare | ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for ours, bare in pairs:
            cpu_o = ours["extra"]["server_cpu_us_per_request"]
            cpu_b = bare["extra"]["server_cpu_us_per_request"]
            lines.append(
                f"| {ours['scenario']} | {ours['connections']:,} | "
                f"{ours['rps']:,.0f} / {bare['rps']:,.0f} | "
                f"{ours['rps'] / bare['rps'] if bare['rps'] else 0:.2f}× | "
                f"{cpu_o:,.0f} / {cpu_b:,.0f} | {cpu_o / cpu_b if cpu_b else 0:.2f}× |"
            )
    return lines


def _open_loop_lines(report: dict[str, Any]) -> list[str]:
    open_loop = report.get("open_loop") or {}
    if not open_loop.get("steps"):
        return []
    best = open_loop["best_rate"]
    top = open_loop["closed_loop_max_rps"]
    lines = [
        "",
        "## Open loop (fixed arrival rate, latency from the scheduled send time)",
        "",
        (
            f"Closed-loop maximum of the mixed scenario first: {top:,.0f} req/s at "
            f"{open_loop['closed_loop_connections']:,} connections. Then each step schedules "
            f"requests (80 % GET by id, 20 % create) at a fixed rate over "
            f"{open_loop['connections']:,} open connections; HDR histogram percentiles."
        ),
        "",
        "| rate req/s | of max | connected | sent | success % | p50 ms | p95 | p99 | p99.9 | max | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in open_loop["steps"]:
        errors = ", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "-"
        lines.append(
            f"| {s['rate']:,.0f} | {_fmt_ratio(s['fraction'])} | {s['connected']:,} | {s['sent']:,} | "
            f"{s['success_pct']:.2f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} | "
            f"{s['p999_ms']:.1f} | {s['max_ms']:.1f} | {errors} |"
        )
    verdict = (
        f"{best:,.0f} req/s ({best / top:.0%} of the closed-loop maximum)" if best and top
        else "none of the steps"
    )
    lines += ["", f"Highest rate with p99 < {P99_GOAL_MS:g} ms and 100 % success: {verdict}."]
    return lines


def _messaging_open_loop_lines(report: dict[str, Any]) -> list[str]:
    step = report.get("messaging_open_loop")
    if not step:
        return []
    lat, d, due = step["latency"], step["delivery"], step["delivery_from_due"]
    lines = [
        "",
        "## Messaging in open loop (sends and history pages on a schedule, sockets open)",
        "",
        (
            f"Sends scheduled at {step['send_rate']:,.0f}/s ({step['fraction']:.0%} of the "
            f"{step['closed_loop_send_max']:,.0f} sends/s the closed-loop messaging phases reached at most) "
            f"and history pages at {step['history_rate']:,.0f}/s, for {step['duration_s']:.0f} s over "
            f"{step['connected']:,} connections, {step['sockets']:,} sockets open on {step['accounts']:,} "
            f"accounts in {step['groups']:,} groups. Latency from each request's due time (HDR histograms)."
        ),
        "",
        "| what | count | success % | p50 ms | p95 | p99 | p99.9 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("send", "history"):
        x = lat[kind]
        lines.append(
            f"| {kind} answered | {x['count']:,} | {step['success_pct'][kind]:.2f} | {x['p50_ms']:.1f} | "
            f"{x['p95_ms']:.1f} | {x['p99_ms']:.1f} | {x['p999_ms']:.1f} | {x['max_ms']:.1f} |"
        )
    for name, x in (("send due → frame on a socket", due), ("send answered → frame", d["latency"])):
        lines.append(
            f"| {name} | {x['count']:,} | – | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | {x['p99_ms']:.1f} | "
            f"{x['p999_ms']:.1f} | {x['max_ms']:.1f} |"
        )
    errors = ", ".join(f"{k} {v}" for k, v in step["errors"].items()) or "none"
    lines += ["", f"Frames expected {d['expected']:,}, matched {d['matched']:,}, missing {d['missing']:,}; "
              f"errors: {errors}."]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark report {report['started_at']}",
        "",
        (
            f"Machine: {report['machine']['cores']} cores, {report['machine']['platform']}, "
            f"Python {report['machine']['python']}. Target: {report['target']} "
            f"({report['server']}). Shards: {report.get('shards', '-')}. "
            f"Duration per phase: {report['config']['duration']} s."
        ),
        "",
        (
            "The load generator runs on the same cores as the server and the databases. The last "
            "columns give its CPU against the server's processes (when the harness started the "
            "server), against all CPU the machine used (including anything else running on it), "
            "and against the machine's capacity."
        ),
        "",
        "## Results",
        "",
        (
            "| scenario | conns | req/s | success % | mean ms | p50 | p95 | p99 | p99.9 | max | "
            "errors (connect/timeout/protocol/status/validation) | gen CPU vs server | "
            "gen CPU vs machine / capacity |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for p in report["phases"]:
        lat, err = p["latency"], p["errors"]
        lines.append(
            f"| {p['scenario']} | {p['connections']:,} | {p['rps']:,.0f} | "
            f"{p['success_pct']:.2f} | {lat['mean_ms']:.1f} | {lat['p50_ms']:.1f} | "
            f"{lat['p95_ms']:.1f} | {lat['p99_ms']:.1f} | {lat['p999_ms']:.1f} | "
            f"{lat['max_ms']:.1f} | "
            + "/".join(
                str(err.get(k, 0))
                for k in ("connect", "timeout", "protocol", "status", "validation")
            )
            + f" | {_fmt_ratio(p.get('generator_vs_server'))} | "
            f"{p['generator_cpu_share']:.0%} / {p['generator_core_share']:.0%} |"
        )
    lines += _cost_lines(report)
    lines += _open_loop_lines(report)
    lines += _messaging_open_loop_lines(report)
    samples = [(p, k, v) for p in report["phases"] for k, v in p["error_samples"].items()]
    if samples:
        lines += ["", "Error samples:", ""]
        lines += [f"- {p['scenario']}@{p['connections']} {k}: `{v}`" for p, k, v in samples[:20]]
    delivered = [p for p in report["phases"] if (p.get("extra") or {}).get("delivery")]
    if delivered:
        lines += [
            "",
            "## Message delivery (send completed → `message.created` on a socket)",
            "",
            (
                "Each socket landed on whichever server worker accepted it, so most deliveries "
                "cross workers through Redis. A frame arriving before its send's HTTP response "
                "counts as 0 ms (early); expected = sockets of the conversation's members per "
                "successful send. The last column is end to end: send request written → frame."
            ),
            "",
            (
                "| conns | sockets | users / groups | sends | frames | expected | missing | "
                "early | p50 ms | p95 | p99 | max | socket errors | from send start p50/p99/max |"
            ),
            "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
            "| --- |",
        ]
        for p in delivered:
            d = p["extra"]["delivery"]
            lat, e2e = d["latency"], d["from_send_start"]
            errors = ", ".join(f"{k} {v}" for k, v in d["socket_errors"].items()) or "-"
            lines.append(
                f"| {p['connections']:,} | {d['sockets']:,} | {d['users']} / {d['groups']} | "
                f"{d['sends']:,} | {d['frames']:,} | {d['expected']:,} | {d['missing']:,} | "
                f"{d['early']:,} | {lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} | "
                f"{lat['p99_ms']:.1f} | {lat['max_ms']:.1f} | {errors} | "
                f"{e2e['p50_ms']:.1f} / {e2e['p99_ms']:.1f} / {e2e['max_ms']:.1f} |"
            )
        lines += [
            f"- socket {k}: `{v}`"
            for p in delivered
            for k, v in p["extra"]["delivery"].get("socket_error_samples", {}).items()
        ]
    ceilings = report.get("ceilings", {})
    lines += ["", "## Ceilings (same run)", ""]
    if ceilings.get("pgbench"):
        lines += [
            "| pgbench | path | TPS (sum of shards) | per shard | clients/shard |",
            "| --- | --- | ---: | --- | ---: |",
        ]
        for r in ceilings["pgbench"]:
            per = ", ".join(f"{k} {v:,.0f}" for k, v in r["per_shard_tps"].items())
            lines.append(
                f"| {r['workload']} | {r['path']} | {r['tps']:,.0f} | {per} | "
                f"{r['clients_per_shard']} |"
            )
            lines += [f"  - error: `{e}`" for e in r["errors"]]
    else:
        lines.append("pgbench ceilings not measured in this run.")
    if ceilings.get("empty_handler"):
        lines += [
            "",
            "| empty ASGI handler | conns | req/s (our generator) | req/s (wrk) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for r in ceilings["empty_handler"]:
            wrk = f"{r['wrk_rps']:,.0f}" if r.get("wrk_rps") else "-"
            lines.append(f"| same granian setup | {r['connections']:,} | {r['rps']:,.0f} | {wrk} |")
    lines += [
        "",
        "## Ours as a ratio of each ceiling",
        "",
        (
            "| scenario | conns | req/s | select PgB | select direct | insert PgB | insert direct | "
            "empty (same gen) | empty (wrk) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["ratios"]:
        lines.append(
            f"| {r['scenario']} | {r['connections']:,} | {r['rps']:,.0f} | "
            + " | ".join(
                _fmt_ratio(r[k])
                for k in (
                    "pgbench_select_pgbouncer",
                    "pgbench_select_direct",
                    "pgbench_insert_pgbouncer",
                    "pgbench_insert_direct",
                    "empty_handler_same_generator",
                    "empty_handler_wrk",
                )
            )
            + " |"
        )
    lines += [
        "",
        "## Targets",
        "",
        "| target | value | goal | met |",
        "| --- | ---: | ---: | --- |",
    ]
    for t in report["targets"]:
        fmt = target_formatter(t["unit"])
        if t["value"] is None:
            lines.append(f"| {t['target']} | not measured | {fmt(t['goal'])} | - |")
            continue
        verdict = "yes" if t["met"] else f"no, missed by {fmt(t['missed_by'])}"
        lines.append(f"| {t['target']} | {fmt(t['value'])} | {fmt(t['goal'])} | {verdict} |")
    if report.get("distribution"):
        lines += [
            "",
            "## Users per shard",
            "",
            "| shard | rows | share | vs mean | ring predicts | vs ring |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in report["distribution"]:
            lines.append(
                f"| {s['name']} | {s['rows']:,} | {s['share']:.2%} | "
                f"{s['deviation_from_mean']:+.2%} | {s['predicted_share']:.2%} | "
                f"{s['deviation_from_predicted'] * 100:+.2f} pp |"
            )
    if report.get("comparison"):
        lines += [
            "",
            f"## Compared with {report['previous']}",
            "",
            "| scenario | conns | req/s | before | change | p99 ms | before |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c in report["comparison"]:
            lines.append(
                f"| {c['scenario']} | {c['connections']:,} | {c['rps']:,.0f} | "
                f"{c['previous_rps']:,.0f} | {_fmt_ratio(c['rps_change'])} | "
                f"{c['p99_ms']:.1f} | {c['previous_p99_ms']:.1f} |"
            )
    profiled = [p for p in report["phases"] if (p.get("extra") or {}).get("profile")]
    if profiled:
        lines += ["", "## Where the server's time goes (py-spy, all workers)", ""]
        for p in profiled:
            prof = p["extra"]["profile"]
            lines += [
                f"### {p['scenario']} @ {p['connections']:,} ({prof['samples']:,} samples)",
                "",
                "| self | frame |",
                "| ---: | --- |",
            ]
            lines += [f"| {e['share']:.1%} | `{e['frame']}` |" for e in prof["self"]]
            lines += ["", "| inclusive | frame |", "| ---: | --- |"]
            lines += [f"| {e['share']:.1%} | `{e['frame']}` |" for e in prof["inclusive"]]
            lines.append("")
    lines += ["", "## Charts", ""]
    lines += [f"![{name}]({name})" for name in report.get("charts", [])]
    return "\n".join(lines) + "\n"


def finish_report(report: dict[str, Any], directory: Path) -> None:
    """Add ratios, targets and the comparison, then write report.json, report.md and charts."""
    directory.mkdir(parents=True, exist_ok=True)
    report["ratios"] = compute_ratios(report)
    report["targets"] = evaluate_targets(report)
    previous = find_previous(directory.parent, directory)
    if previous is not None:
        report["previous"] = str(previous)
        report["comparison"] = compare(report, json.loads((previous / REPORT_JSON).read_text()))
    report["charts"] = _draw_charts(report, directory)
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str))
    (directory / REPORT_MD).write_text(render_markdown(report))


def _draw_charts(report: dict[str, Any], directory: Path) -> list[str]:
    drawn = []
    phases = report["phases"]
    if phases:
        charts.latency_chart(phases, directory / "latency.png")
        charts.timeline_chart(phases, directory / "timeline.png")
        lines = {
            f"pgbench {r['workload']} {r['path']}": r["tps"]
            for r in report.get("ceilings", {}).get("pgbench", [])
        }
        for r in report.get("ceilings", {}).get("empty_handler", []):
            lines[f"empty handler @{r['connections']}"] = r["rps"]
        charts.throughput_chart(phases, lines, directory / "throughput.png")
        drawn += ["latency.png", "timeline.png", "throughput.png"]
    open_loop = report.get("open_loop") or {}
    if open_loop.get("steps"):
        charts.open_loop_chart(open_loop["steps"], P99_GOAL_MS, directory / "open_loop.png")
        drawn.append("open_loop.png")
    if report.get("distribution"):
        charts.distribution_chart(report["distribution"], directory / "distribution.png")
        drawn.append("distribution.png")
    return drawn
