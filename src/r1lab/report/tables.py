"""Markdown tables of evaluation results."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def accuracy_cell(results: dict[str, Any]) -> str:
    low, high = results.get("accuracy_ci") or (None, None)
    interval = f" [{_pct(low)}, {_pct(high)}]" if low is not None else ""
    return f"{_pct(results.get('accuracy'))}{interval}"


def results_table(evals: dict[str, dict[str, Any]], seconds: dict[str, float] | None = None) -> str:
    """One row per evaluated model: greedy accuracy with its 95% Wilson interval, pass@k, maj@k, lengths."""
    ks = sorted({key for r in evals.values() for key in r if key.startswith(("pass@", "maj@"))})
    header = ["model", "accuracy % [95% CI]", *[f"{k} %" for k in ks], "format errors %", "mean length", "n"]
    if seconds is not None:
        header.append("wall time")
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in evals.items():
        cells = [label, accuracy_cell(r), *[_pct(r.get(k)) for k in ks]]
        cells += [
            _pct(r.get("format_error_rate")),
            f"{r.get('mean_length', 0):.1f}",
            str(r.get("n_problems", "")),
        ]
        if seconds is not None:
            cells.append(_duration(seconds.get(label)))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
