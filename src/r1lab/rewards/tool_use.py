"""`tool_call_penalty`: a per-episode term against over-calling tools (DeepMMSearch-R1 penalises searches
beyond what the question needs).

r = −penalty × max(0, tool_calls − allowed)

`tool_calls` is the number of tool calls the episode made. The multi-turn rollout passes it with the episode's
columns (an int, the key `tool_calls`), the same way as the dataset's columns, so it is not a dataset column
and not an option; a dataset may also carry it (e.g. to score logged episodes). An episode without it (a
single-turn rollout) gets None: the term does not apply. Add the term beside the task's correctness reward,
e.g. `rewards: [{name: exact}, {name: tool_call_penalty, kwargs: {allowed: 2, penalty: 0.1}}]`.
"""

from __future__ import annotations

from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.registry import reward


def _check(kwargs: dict[str, Any]) -> None:
    allowed, penalty = kwargs.get("allowed", 1), kwargs.get("penalty", 0.1)
    if not isinstance(allowed, int) or isinstance(allowed, bool) or allowed < 0:
        raise UserError(
            f"tool_call_penalty: allowed must be an integer >= 0, got {allowed!r}",
            where="rewards: name='tool_call_penalty', kwargs.allowed",
            fix="the number of calls an episode may make for free, e.g. allowed: 1",
        )
    if not isinstance(penalty, int | float) or isinstance(penalty, bool) or penalty < 0:
        raise UserError(
            f"tool_call_penalty: penalty must be a number >= 0, got {penalty!r}",
            where="rewards: name='tool_call_penalty', kwargs.penalty",
            fix="the reward taken off per call beyond `allowed`, e.g. penalty: 0.1",
        )


@reward("tool_call_penalty", check=_check)
def tool_call_penalty(
    completion: str, *, allowed: int = 1, penalty: float = 0.1, **columns: Any
) -> float | None:
    """−penalty per tool call beyond `allowed`; 0.0 within it; None when the episode has no `tool_calls`."""
    calls = columns.get("tool_calls")
    if calls is None:
        return None
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
        raise ValueError(f"tool_calls must be a count (an int >= 0), got {calls!r}")
    return -float(penalty) * max(0, calls - allowed)
