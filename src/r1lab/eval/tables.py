"""Markdown tables of eval results: one eval's metrics, or several evals side by side (base vs SFT vs RL)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_KEYED = re.compile(r"^(pass|maj)@(\d+)$")


def _fmt(value: Any, ci: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        text = f"{value:.3f}"
        return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text
    return str(value)


def _metric_columns(results: list[Mapping[str, Any]]) -> list[str]:
    """accuracy, then pass@k and maj@k in order of k, then length and format columns, as present."""
    keyed = sorted(
        {k for r in results for k in r if _KEYED.match(k)},
        key=lambda k: (k.startswith("maj"), int(k.split("@")[1])),
    )
    tail = ["mean_reward", "mean_length", "format_error_rate", "truncated_rate"]
    return ["accuracy", *keyed, *(k for k in tail if any(k in r for r in results))]


def results_table(
    results: Mapping[str, Mapping[str, Any]], train_seconds: Mapping[str, float | None] | None = None
) -> str:
    """A markdown table with one row per labelled eval (e.g. {"base": ..., "SFT→RL": ...}); accuracy, pass@k
    and maj@k show their 95% Wilson intervals. `train_seconds` adds the training wall time of each row."""
    rows = list(results.values())
    if not rows:
        return "(no results)"
    metrics = _metric_columns(rows)
    header = ["model", "problems", *metrics, *(["train time"] if train_seconds is not None else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in results.items():
        cells = [str(label), _fmt(r.get("num_problems"))]
        cells += [_fmt(r.get(m), r.get(f"{m}_ci95")) for m in metrics]
        if train_seconds is not None:
            cells.append(_duration(train_seconds.get(label)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def results_markdown(result: Mapping[str, Any]) -> str:
    """One eval as markdown: a heading naming model and eval set, the metrics table, the settings."""
    title = f"# Eval of `{result.get('model', '?')}` on {result.get('source', '?')}"
    settings = [f"rewards: {', '.join(result.get('rewards', []))}"]
    if "n" in result:
        settings.append(f"samples per problem: {result['n']} at temperature {result['temperature']}")
    failed = {label: n for label, n in result.get("reward_failures", {}).items() if n}
    if failed:
        counts = ", ".join(f"{label} {n}" for label, n in failed.items())
        settings.append(f"failed reward calls: {counts} (each with its inputs in reward_errors.jsonl)")
    settings.append("intervals: 95% Wilson score; accuracy is greedy decoding")
    return "\n\n".join([title, results_table({"model": result}), "\n".join(f"- {s}" for s in settings)])
