"""PNG charts for a benchmark report, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, *, dpi: int = 110) -> None:
    """Lay the figure out, write it as PNG and free it (figures are not collected otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


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
    save(fig, path)


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
    save(fig, path)


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
    save(fig, path)


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
    save(fig, path)


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
    save(fig, path, dpi=100)


def reshard_chart(
    writes: dict[str, tuple[list[float], list[float]]],
    failures: tuple[list[float], list[float]],
    ok_per_second: list[int],
    phases: list[dict[str, Any]],
    path: Path,
) -> None:
    """Write latency over time by key class (log scale), failed requests marked, answered
    req/s below, the workflow's phase boundaries as vertical lines on both."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 1))
    colours = {"other": "tab:blue", "moving": "tab:red"}
    for key_class, (xs, ys) in sorted(writes.items(), key=lambda kv: kv[0] != "other"):
        top.scatter(xs, [max(y, 0.05) for y in ys], s=4, alpha=0.5, color=colours.get(key_class, "tab:gray"),
                    label=f"writes, {key_class} keys", rasterized=True)
    if failures[0]:
        top.scatter(failures[0], [max(y, 0.05) for y in failures[1]], s=18, marker="x", color="black",
                    label="failed requests")
    top.axhline(1000, color="red", linestyle="--", linewidth=0.8, label="p99 goal 1 s")
    top.set_yscale("log")
    top.set_ylabel("write latency (ms, log)")
    bottom.plot(range(len(ok_per_second)), ok_per_second, color="tab:green")
    bottom.set_ylabel("answered req/s")
    bottom.set_xlabel("seconds since the load started")
    for ax in (top, bottom):
        for i, phase in enumerate(phases):
            ax.axvline(phase["start"], color="gray", linestyle=":", linewidth=1)
            if ax is top:
                ax.text(phase["start"], 1.0 + 0.06 * (i % 2), phase["name"], transform=ax.get_xaxis_transform(),
                        fontsize=8, ha="left", va="bottom")
        if phases:
            ax.axvline(phases[-1]["end"], color="gray", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    top.legend(fontsize="small", loc="upper left")
    fig.suptitle("Resharding under load: write latency, moving keys vs the others", y=0.995)
    save(fig, path)
