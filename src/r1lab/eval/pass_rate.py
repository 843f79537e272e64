"""Per-prompt pass rates from the eval runner's rows: the one measurement behind `r1lab data select --method
pass_rate` (offline selection) and the RL stage's `pass_rate_filter` (RIF-RFT: drop prompts before RL).

A prompt's pass rate is the share of its sampled completions (`kind == "sample"`) the accuracy reward verifies;
its greedy completion is reported beside it and never counted in the rate.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

Drop = Literal["never", "always", "both"]


def pass_rates(rows: list[dict[str, Any]], n_prompts: int) -> tuple[list[float], list[bool | None]]:
    """(pass rate, greedy correct or None) per prompt 0..n_prompts-1, from `generate_and_score` rows."""
    solved: dict[int, list[bool]] = defaultdict(list)
    greedy: dict[int, bool] = {}
    for row in rows:
        if row["kind"] == "sample":
            solved[row["problem"]].append(bool(row["correct"]))
        else:
            greedy[row["problem"]] = bool(row["correct"])
    missing = [i for i in range(n_prompts) if not solved[i]]
    if missing:  # the caller asked for samples (n >= 2): a prompt without any is a bug, not a rate of 0
        raise ValueError(f"no sampled completion for prompts {missing[:5]}")
    rates = [sum(solved[i]) / len(solved[i]) for i in range(n_prompts)]
    return rates, [greedy.get(i) for i in range(n_prompts)]


def kept_by_pass_rate(rates: list[float], drop: Drop) -> list[int]:
    """The indices of the prompts kept when those never solved (rate 0), always solved (rate 1) or both are
    dropped, in order."""
    never, always = drop in ("never", "both"), drop in ("always", "both")
    return [i for i, r in enumerate(rates) if not (never and r == 0) and not (always and r == 1)]


def pass_rate_counts(rates: list[float]) -> dict[str, int]:
    """How many prompts were never, sometimes and always solved."""
    never, always = sum(r == 0 for r in rates), sum(r == 1 for r in rates)
    return {"prompts": len(rates), "never": never, "mixed": len(rates) - never - always, "always": always}
