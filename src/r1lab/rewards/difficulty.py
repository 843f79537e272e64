"""`difficulty_weighted`: another reward scaled by the problem's difficulty (RewardMap, Curr-ReFT style).

    rewards:
      - {name: difficulty_weighted, kwargs: {reward: countdown_partial, reference: 4}}
      - {name: countdown, weight: 0}   # logged as accuracy; the scaled reward is not a right/wrong check

r = (d / reference) ** power * inner(completion, ...), d the row's difficulty column (`column`, default
`difficulty`: the Countdown rows carry their number count). With reference = the hardest difficulty a run trains
on, hard problems count fully and easy ones less. A weight is one number per prompt, so it cancels in any
advantage that divides each group by its own standard deviation (`grpo`); it changes the update with `dr_grpo`,
`rloo`, `opo` (a per-prompt scale of the advantage) and with `batch_std`, `reinforce_pp*` (harder prompts weigh
more within the batch).
"""

from __future__ import annotations

import math
from typing import Any

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards.registry import REWARDS, reward

WHERE = "rewards[] (name='difficulty_weighted').kwargs"


def _inner_spec(kwargs: dict[str, Any]) -> RewardSpec:
    name = kwargs.get("reward")
    if not isinstance(name, str) or name not in REWARDS or name == "difficulty_weighted":
        raise UserError(
            f"difficulty_weighted: `reward` must name a built-in reward to scale, got {name!r}",
            where=f"{WHERE}.reward",
            fix=f"e.g. reward: countdown_partial; {REWARDS.fix_for(str(name))}",
        )
    inner = kwargs.get("reward_kwargs", {})
    if not isinstance(inner, dict):
        raise UserError(
            f"difficulty_weighted: reward_kwargs must be a mapping, got {inner!r}",
            where=f"{WHERE}.reward_kwargs",
            fix="e.g. reward_kwargs: {format_credit: 0.1}",
        )
    return RewardSpec(name=name, kwargs=inner)


def _check(kwargs: dict[str, Any]) -> None:
    from r1lab.rewards.loader import load_reward

    loaded = load_reward(_inner_spec(kwargs))  # the inner reward's own kwarg checks
    if loaded.batched:
        raise UserError(
            f"difficulty_weighted scales one sample at a time; {loaded.label!r} is a batched reward",
            where=f"{WHERE}.reward",
            fix="give that reward its own entry in `rewards:` instead",
        )
    for key in ("reference", "power"):
        value = kwargs.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(
                f"difficulty_weighted: {key} must be a number, got {value!r}", where=f"{WHERE}.{key}"
            )
    if kwargs.get("reference", 1.0) <= 0:
        raise UserError(
            f"difficulty_weighted: reference must be positive, got {kwargs['reference']!r}",
            where=f"{WHERE}.reference",
            fix="e.g. the hardest difficulty trained on (Countdown: its largest count)",
        )


def _columns(kwargs: dict[str, Any]) -> set[str]:
    from r1lab.rewards.loader import load_reward

    return {kwargs.get("column", "difficulty")} | load_reward(_inner_spec(kwargs)).columns


def difficulty_weight(difficulty: Any, reference: float = 1.0, power: float = 1.0) -> float:
    """(d / reference) ** power for a positive difficulty d (a ValueError otherwise: logged as a failed call)."""
    if isinstance(difficulty, bool) or not isinstance(difficulty, int | float) or not difficulty > 0:
        raise ValueError(f"difficulty must be a positive number, got {difficulty!r}")
    return (difficulty / reference) ** power


@reward("difficulty_weighted", columns=_columns, check=_check)
def difficulty_weighted_reward(
    completion: str,
    *,
    reward: str,
    reward_kwargs: dict[str, Any] | None = None,
    column: str = "difficulty",
    reference: float = 1.0,
    power: float = 1.0,
    **columns: Any,
) -> float | None:
    """The `reward` reward (with `reward_kwargs`) times (difficulty / reference) ** power; None stays None."""
    value = REWARDS.get(reward)(completion, **columns, **(reward_kwargs or {}))
    if value is None:
        return None
    return difficulty_weight(columns[column], reference, power) * value
