"""Results of a recipe or comparison as markdown tables, PNG plots and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1lab.eval.tables import results_table
from r1lab.report.html import render
from r1lab.report.plots import accuracy_bars, curve_plot, read_metrics

__all__ = ["write_report"]


def write_report(root: Path, state: dict[str, Any], arms: dict[str, str]) -> None:
    """Write `results.md`, `plots/*.png` and `report.html` for the arms (arm label -> stage name or "base")."""
    evals = {arm: state["evals"][stage] for arm, stage in arms.items() if stage in state["evals"]}
    stage_seconds = {name: entry.get("seconds") for name, entry in state["stages"].items()}
    seconds = {arm: _arm_seconds(stage, state, stage_seconds) for arm, stage in arms.items()}
    table = results_table(evals, seconds)
    (root / "results.md").write_text(f"# {root.name}: base vs SFT-only vs RL-only vs SFT→RL\n\n{table}\n")

    plots_dir = root / "plots"
    plots_dir.mkdir(exist_ok=True)
    trained = {
        arm: read_metrics(root / stage / "metrics.jsonl") for arm, stage in arms.items() if stage != "base"
    }
    rl_arms = {arm: rows for arm, rows in trained.items() if "RL" in arm}
    plots = [
        accuracy_bars(evals, plots_dir / "accuracy.png"),
        curve_plot(
            rl_arms,
            ["reward/mean", "reward_mean", "reward"],
            "RL reward (train batch)",
            plots_dir / "reward.png",
        ),
        curve_plot(
            rl_arms,
            ["accuracy", "accuracy/mean"],
            "RL accuracy (train batch)",
            plots_dir / "train_accuracy.png",
        ),
        curve_plot(
            rl_arms,
            ["completion_length/mean", "length/mean", "completion_length"],
            "completion length (tokens)",
            plots_dir / "length.png",
        ),
        curve_plot({"SFT": trained.get("SFT-only", [])}, ["loss"], "SFT loss", plots_dir / "sft_loss.png"),
    ]
    samples = {arm: root / "eval" / stage / "samples.jsonl" for arm, stage in arms.items()}
    page = render(f"{root.name}: comparison", table, [p for p in plots if p], samples)
    (root / "report.html").write_text(page)


def _arm_seconds(stage: str, state: dict[str, Any], seconds: dict[str, float | None]) -> float | None:
    """Training time of the chain of stages that produced this arm's model."""
    total, current = 0.0, stage
    while current and current != "base":
        if seconds.get(current) is None:
            return None
        total += seconds[current]
        source = state["stages"][current].get("input")
        current = next((name for name, e in state["stages"].items() if e.get("model") == source), None)
    return total if stage != "base" else None
