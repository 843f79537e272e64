"""Rewards of the built-in visual tasks (r1lab.tasks.visual), all reading the `Answer:` line.

`jigsaw` fraction of positions holding the right piece (0 unless the answer is a permutation of 1..n),
`grounding` F1 of the answered box ids against the gold ids (`none` = the empty set), `route` 1.0 for a shortest
path to the goal, else RewardMap's dense detail credit for the correct leading steps. (`count` is scored by
`arithmetic`, `classify` by `exact`.)
"""

from __future__ import annotations

import re
from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.registry import reward
from r1lab.rewards.tasks import has_answer
from r1lab.tasks.base import extract_answer
from r1lab.tasks.visual.route import MOVES, distances

_INT = re.compile(r"\d+")
_MOVE = re.compile(r"\b(up|down|left|right|[UDLR])\b", re.IGNORECASE)


def _ids(text: str) -> list[int]:
    return [int(x) for x in _INT.findall(text)]


@reward("jigsaw", columns=("answer",), correctness=True, parses=has_answer)
def jigsaw_reward(completion: str, *, answer: Any, **_: Any) -> float:
    """Jigsaw-R1: the fraction of positions whose piece number is right; 0.0 when the answer does not use each
    piece number 1..n exactly once (a repeated number would place one piece twice)."""
    gold, found = _ids(str(answer)), extract_answer(completion)
    if found is None:
        return 0.0
    given = _ids(found)
    if sorted(given) != sorted(gold):
        return 0.0
    return sum(g == x for g, x in zip(gold, given, strict=True)) / len(gold)


def box_ids(text: str) -> set[int] | None:
    """The box ids an answer names: `none` (alone) is the empty set; None when it names neither."""
    if text.strip().strip(".").lower() == "none":
        return set()
    ids = _ids(text)
    return set(ids) if ids else None


@reward("grounding", columns=("answer",), correctness=True, parses=has_answer)
def grounding_reward(completion: str, *, answer: Any, **_: Any) -> float:
    """F1 of the answered box ids against the gold ids; abstaining (`none`) is right only when none match
    (1.0), and wrong (0.0) when some do; ids given when none match score 0.0."""
    gold, found = box_ids(str(answer)), extract_answer(completion)
    given = box_ids(found) if found is not None else None
    if gold is None or given is None:
        return 0.0
    if not gold or not given:
        return float(gold == given)
    hits = len(gold & given)
    return 2 * hits / (len(gold) + len(given))


def parse_moves(text: str) -> list[str]:
    return [m[0].upper() for m in _MOVE.findall(text)]


def _check_route(kwargs: dict[str, Any]) -> None:
    weight = kwargs.get("detail_weight", 0.5)
    if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 <= weight < 1:
        raise UserError(
            f"route reward: detail_weight must be a number in [0, 1), got {weight!r}",
            where="rewards: name='route', kwargs.detail_weight",
            fix="below 1, so a partial path never scores as much as a correct one, e.g. 0.5",
        )


@reward(
    "route",
    columns=("rows", "cols", "walls", "start", "goal"),
    correctness=True,
    check=_check_route,
    parses=has_answer,
)
def route_reward(
    completion: str,
    *,
    rows: int,
    cols: int,
    walls: Any,
    start: Any,
    goal: Any,
    detail_weight: float = 0.5,
    **_: Any,
) -> float:
    """1.0 if the moves are a shortest path from start to goal. Otherwise the dense detail credit
    detail_weight x (leading moves that each stay on the map, off walls and one step closer to the goal) /
    (shortest path length): a path right for its first half earns half the detail credit."""
    found = extract_answer(completion)
    wall_cells = {tuple(w) for w in walls}
    dist = distances(rows, cols, wall_cells, tuple(goal))
    cell = tuple(start)
    if found is None or cell not in dist or dist[cell] == 0:
        return 0.0
    shortest, good = dist[cell], 0
    moves = parse_moves(found)
    for move in moves:
        nxt = (cell[0] + MOVES[move][0], cell[1] + MOVES[move][1])
        if dist.get(nxt, -1) != dist[cell] - 1:
            break
        cell, good = nxt, good + 1
    if good == shortest and len(moves) == shortest:
        return 1.0
    return detail_weight * min(good, shortest) / shortest
