"""Length shaping: `overlong`, DAPO's soft overlong penalty."""

from __future__ import annotations

from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.registry import reward


def _check(kwargs: dict[str, Any]) -> None:
    for key in ("cache_length", "max_length"):
        value = kwargs.get(key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise UserError(
                f"overlong reward: {key} must be a positive number of tokens, got {value!r}",
                where=f"rewards[].kwargs.{key}",
                fix=f"e.g. {key}: 256, or leave it out",
            )


@reward("overlong", columns=("completion_length", "max_completion_length"), check=_check)
def overlong_reward(
    completion: str,
    *,
    completion_length: int,
    max_completion_length: int,
    cache_length: int | None = None,
    max_length: int | None = None,
    **_: Any,
) -> float:
    """0 up to L_max - L_cache tokens, then falls linearly to -1 at L_max; -1 beyond.

    r = -((len - (L_max - L_cache)) / L_cache) for L_max - L_cache < len <= L_max (DAPO). L_max is max_length or
    the rollout's max_completion_length; L_cache defaults to a fifth of L_max (DAPO: 4096 of 20480).
    Use it with a weight next to the correctness reward.
    """
    limit = max_length or max_completion_length
    cache = min(cache_length or max(1, limit // 5), limit)
    start = limit - cache
    if completion_length <= start:
        return 0.0
    if completion_length <= limit:
        return -(completion_length - start) / cache
    return -1.0
