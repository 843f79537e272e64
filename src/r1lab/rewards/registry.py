"""The reward registry: name -> fn(completion, *, prompt, **columns) -> float | None.

A reward returns a float, or None when it does not apply to the sample (e.g. no gold answer); None counts as 0
in the weighted sum but is logged apart. `@reward(...)` registers a function and records what the runner needs
to know about it: the dataset columns it reads, whether it measures correctness (the RL loop logs it as
accuracy), and an optional check of its config kwargs so a bad value fails at load time, not mid-training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from r1lab.registry import Registry

RewardFn = Callable[..., Any]
Columns = Iterable[str] | Callable[[dict[str, Any]], Iterable[str]]

REWARDS: Registry[RewardFn] = Registry("reward")


def reward(
    name: str,
    *,
    columns: Columns = (),
    correctness: bool = False,
    check: Callable[[dict[str, Any]], None] | None = None,
    parses: RewardFn | None = None,
) -> Callable[[RewardFn], RewardFn]:
    """Register a reward function under `name`.

    columns: dataset columns the function reads, or a function of the spec kwargs giving them
        (e.g. `lambda kw: [kw.get("answer_key", "answer")]`).
    correctness: the function scores right/wrong; the first such reward in a run is logged as accuracy
        (a value >= 1 counts as correct; see `rewards.runner.accuracy_index`).
    check: called with the spec kwargs when the reward is loaded; raises UserError on a bad value.
    parses: fn(completion, *, prompt, **columns) -> bool, called like the reward: whether the completion gives
        an answer this reward can read. Eval's format-error rate is 1 - its mean for the accuracy reward.
        A user function sets the same attribute: `my_reward.parses = my_check`.
    """

    def add(fn: RewardFn) -> RewardFn:
        fn.required_columns = columns  # type: ignore[attr-defined]
        fn.correctness = correctness  # type: ignore[attr-defined]
        fn.check_kwargs = check  # type: ignore[attr-defined]
        fn.parses = parses  # type: ignore[attr-defined]
        return REWARDS.register(name)(fn)

    return add


def answer_column(kwargs: dict[str, Any]) -> list[str]:
    """The gold-answer column of the built-in correctness rewards (kwarg `answer_key`, default "answer")."""
    return [kwargs.get("answer_key", "answer")]
