"""PNG plots for a comparison: per-step training curves and the final accuracy bars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curve_plot(
    series: dict[str, list[dict[str, Any]]], keys: list[str], title: str, out: Path
) -> Path | None:
    """Plot the first of `keys` each run logged, against its step; None when no run logged any."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    plotted = False
    for label, rows in series.items():
        key = next((k for k in keys if any(k in r for r in rows)), None)
        points = [(r["step"], r[key]) for r in rows if key and key in r and "step" in r]
        if points:
            ax.plot(*zip(*points, strict=True), label=f"{label}", linewidth=1.5)
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def interval_bars(
    labels: list[str],
    means: list[float],
    intervals: list[tuple[float, float]],
    per_seed: list[list[float]],
    out: Path,
) -> Path:
    """Mean accuracy per arm (%) with its 95% interval as error bars and each seed's accuracy as a dot."""
    acc = [100 * m for m in means]
    errors = [
        [max(0.0, v - 100 * lo) for v, (lo, _) in zip(acc, intervals, strict=True)],
        [max(0.0, 100 * hi - v) for v, (_, hi) in zip(acc, intervals, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 3.8))
    colors = ["#999", "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6"]
    x = range(len(labels))
    bars = ax.bar(x, acc, yerr=errors, capsize=6, color=[colors[i % len(colors)] for i in x])
    for i, seeds in enumerate(per_seed):
        if len(seeds) > 1:  # beside the error bar, not on it
            ax.plot([i + 0.22] * len(seeds), [100 * v for v in seeds], "k.", markersize=6, zorder=3)
    for bar, value, (_, hi) in zip(bars, acc, intervals, strict=True):
        ax.annotate(
            f"{value:.1f}",
            (bar.get_x() + bar.get_width() / 2, max(value, 100 * hi)),
            ha="center",
            va="bottom",
            xytext=(0, 4),
            textcoords="offset points",
        )
    ax.margins(y=0.12)
    ax.set_xticks(
        list(x), labels, rotation=20 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center"
    )
    ax.set_ylabel("accuracy % (95% interval)")
    ax.set_title("held-out accuracy (dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def sweep_plot(key: str, points: list[tuple[Any, float, float, float]], out: Path) -> Path:
    """Accuracy (%) against the swept value, with 95% intervals; a log x axis when the values span > 20x."""
    numeric = all(isinstance(p[0], (int, float)) and not isinstance(p[0], bool) for p in points)
    xs = [p[0] if numeric else i for i, p in enumerate(points)]
    ys = [100 * p[1] for p in points]
    low = [100 * (p[1] - p[2]) for p in points]
    high = [100 * (p[3] - p[1]) for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=5, linewidth=1.5)
    positive = numeric and min(xs) > 0
    if positive and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(xs, [str(p[0]) for p in points])
    ax.set_xlabel(key)
    ax.set_ylabel("accuracy % (95% interval)")
    ax.set_title(f"sweep over {key}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
