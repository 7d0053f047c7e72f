"""PNG charts for a benchmark report, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(phase: dict[str, Any]) -> str:
    return f"{phase['scenario']}@{phase['connections']}"


def latency_chart(phases: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars of p50/p95/p99/p99.9 per scenario and level, log scale."""
    plt = pyplot()
    keys = [("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(phases) + 2), 4.5))
    width = 0.8 / len(keys)
    for k, (key, name) in enumerate(keys):
        xs = [i + (k - 1.5) * width for i in range(len(phases))]
        ax.bar(xs, [max(p["latency"][key], 1e-3) for p in phases], width, label=name)
    ax.set_xticks(range(len(phases)), [_label(p) for p in phases], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("Latency percentiles per scenario @ connections")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline_chart(phases: list[dict[str, Any]], path: Path) -> None:
    """Successful requests and errors per second over each phase."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for p in phases:
        top.plot(p["ok_per_second"], label=_label(p))
        bottom.plot(p["errors_per_second"], label=_label(p))
    top.set_ylabel("ok req/s")
    bottom.set_ylabel("errors/s")
    bottom.set_xlabel("second of phase")
    top.set_title("Throughput and errors over time")
    top.legend(fontsize="small", ncol=2)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput_chart(phases: list[dict[str, Any]], ceilings: dict[str, float], path: Path) -> None:
    """Req/s per scenario and level, with the ceilings drawn as horizontal lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(phases) + 3), 4.5))
    ax.bar(range(len(phases)), [p["rps"] for p in phases], color="tab:blue")
    ax.set_xticks(range(len(phases)), [_label(p) for p in phases], rotation=30, ha="right")
    for (name, value), style in zip(ceilings.items(), ["--", ":", "-."] * 4, strict=False):
        if value:
            ax.axhline(value, linestyle=style, label=f"{name}: {value:,.0f}", alpha=0.7)
    ax.set_ylabel("successful req/s")
    ax.set_title("Throughput vs ceilings")
    if ceilings:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def distribution_chart(shares: list[dict[str, Any]], path: Path) -> None:
    """Rows per shard, with the share the ring predicts marked on each bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(shares) + 2), 4))
    total = sum(s["rows"] for s in shares)
    names = [s["name"] for s in shares]
    ax.bar(names, [s["rows"] for s in shares], label="rows")
    ax.scatter(
        names,
        [s["predicted_share"] * total for s in shares],
        color="tab:red",
        marker="_",
        s=900,
        label="ring prediction",
        zorder=3,
    )
    ax.set_ylabel("users")
    ax.set_title(f"Users per shard ({total:,} in all)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def open_loop_chart(steps: list[dict[str, Any]], goal_ms: float, path: Path) -> None:
    """p50/p95/p99/p99.9 against the scheduled arrival rate, log scale, with the p99 goal."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [s["rate"] for s in steps]
    for key, name in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        ax.plot(rates, [max(s[key], 1e-3) for s in steps], marker="o", label=name)
    ax.axhline(goal_ms, color="red", linestyle="--", linewidth=1, label=f"goal p99 {goal_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("scheduled arrivals per second (open loop)")
    ax.set_ylabel("latency from scheduled send, ms")
    ax.set_title(f"Open loop, 80/20 mix, {steps[0]['connections']:,} connections")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
