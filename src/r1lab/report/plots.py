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


def accuracy_bars(evals: dict[str, dict[str, Any]], out: Path) -> Path:
    """Greedy accuracy per arm with its 95% Wilson interval as error bars."""
    labels = list(evals)
    acc = [100 * evals[a].get("accuracy", 0.0) for a in labels]
    ci = [evals[a].get("accuracy_ci95") or (evals[a].get("accuracy", 0.0),) * 2 for a in labels]
    errors = [
        [v - 100 * lo for v, (lo, _) in zip(acc, ci, strict=True)],
        [100 * hi - v for v, (_, hi) in zip(acc, ci, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bars = ax.bar(
        labels, acc, yerr=errors, capsize=6, color=["#999", "#4c78a8", "#f58518", "#54a24b"][: len(labels)]
    )
    for bar, value in zip(bars, acc, strict=True):
        ax.annotate(
            f"{value:.1f}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_ylabel("accuracy % (95% CI)")
    ax.set_title("held-out accuracy")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
