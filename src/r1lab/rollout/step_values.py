"""Steps of a completion and Monte-Carlo estimates of how often a step prefix still leads to a correct answer.

The one implementation behind per-step preference pairs (`r1lab data pairs --per-step`) and, later, the
automatic step labels of a process reward model (Math-Shepherd style).

A step is the text up to and including the next occurrence of the step separator (default a newline: the
built-in tasks write one step per line, e.g. Countdown's `7 * 3 = 21` lines and then `Answer: ...`). Blank
text between separators goes with the step that follows it, blank text after the last step with the last step,
and the text after the last separator is the last step. So `"".join(split_steps(text, sep)) == text` (blank
text has no steps).

`prefix_success` continues each prefix M times from the same prompt (the prefix text is tokenized after the
prompt's tokens), scores prompt + prefix + continuation with the accuracy reward, and returns the share of the
M that are correct (>= 1, `rewards.runner.is_correct`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from r1lab.rewards import RewardRunner
from r1lab.rollout.types import RolloutEngine, SamplingParams


def split_steps(text: str, sep: str = "\n") -> list[str]:
    """The steps of `text`, each ending with its separator (the last one may not); [] for blank text."""
    if not sep:
        raise ValueError("the step separator must be a non-empty string")
    steps: list[str] = []
    current = ""
    for piece in text.split(sep):
        current += piece
        if current.replace(sep, "").strip():
            steps.append(current + sep)
            current = ""
        else:  # only separators and blanks so far: they go with the step that follows
            current += sep
    if not steps:
        return []
    # text.split dropped no separator but added one after the last piece: take it back
    steps[-1] = steps[-1].removesuffix(sep) if not current else steps[-1]
    steps[-1] += current.removesuffix(sep)
    return steps


@dataclass(frozen=True)
class Prefix:
    """A partial completion of one prompt: what `prefix_success` continues."""

    prompt_ids: list[int]
    prompt_text: str  # as the rewards see the prompt
    text: str  # the completion so far
    columns: dict[str, Any] = field(default_factory=dict)  # the prompt's data columns (gold answer...)


def prefix_success(
    engine: RolloutEngine,
    tokenizer: Any,
    prefixes: Sequence[Prefix],
    m: int,
    sampling: SamplingParams,
    rewards: RewardRunner,
) -> list[float]:
    """For each prefix, the share of `m` continuations sampled by `engine` whose full text (prefix +
    continuation) the accuracy reward of `rewards` scores correct. One generate call for all prefixes."""
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    if not prefixes:
        return []
    ids = [list(p.prompt_ids) + tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prefixes]
    got = engine.generate(ids, m, sampling)
    texts = [prefixes[i].text + t for i, t in zip(got.prompt_index, got.texts, strict=True)]
    scored = rewards.score(
        texts,
        [prefixes[i].prompt_text for i in got.prompt_index],
        [prefixes[i].columns for i in got.prompt_index],
    )
    if scored.accuracy is None:
        raise ValueError("the rewards have no accuracy reward to estimate success with")
    hits = [0] * len(prefixes)
    for row, i in enumerate(got.prompt_index):
        hits[i] += int(scored.accuracy[row].item() == 1.0)
    return [h / m for h in hits]
