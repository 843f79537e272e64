"""PNG of an eval's test-time scaling curves (`r1lab eval --select ...`): accuracy vs n with 95% intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1lab.report.plots import plt  # the Agg back end plots.py selects


def scaling_plot(scaling: dict[str, Any], out: Path) -> Path:
    """One line per selection method: accuracy (%) against n (log2 axis) with its 95% interval as a band."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for curve in scaling["curves"]:
        ns = [p["n"] for p in curve["points"]]
        ax.plot(
            ns,
            [100 * p["accuracy"] for p in curve["points"]],
            marker="o",
            linewidth=1.5,
            label=curve["label"],
        )
        low = [100 * p["accuracy_ci95"][0] for p in curve["points"]]
        high = [100 * p["accuracy_ci95"][1] for p in curve["points"]]
        ax.fill_between(ns, low, high, alpha=0.15)
    ticks = sorted({p["n"] for c in scaling["curves"] for p in c["points"]})
    if ticks[-1] > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("samples per problem (n)")
    ax.set_ylabel("accuracy % (95% interval)")
    ax.set_title(f"test-time scaling, {scaling['num_problems']} problems")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
