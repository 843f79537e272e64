"""Countdown: reach a target by combining the given numbers with + - * /, each number used at most once."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, Task, format_instruction, require

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _wrap(expr: str, prec: int, parent: str, right: bool) -> str:
    """Parenthesise a child expression only where precedence needs it: (a + b) * c, a - (b - c)."""
    need = prec < _PREC[parent] or (right and prec == _PREC[parent] and parent in "-/")
    return f"({expr})" if need else expr


class _Node:
    def __init__(self, value: int, expr: str, prec: int = 3) -> None:
        self.value, self.expr, self.prec = value, expr, prec


def _combine(x: _Node, y: _Node, op: str) -> _Node:
    value = {"+": x.value + y.value, "-": x.value - y.value, "*": x.value * y.value}.get(op)
    if op == "/":
        value = x.value // y.value
    expr = f"{_wrap(x.expr, x.prec, op, False)} {op} {_wrap(y.expr, y.prec, op, True)}"
    return _Node(value, expr, _PREC[op])


@TASKS.register("countdown")
class Countdown(Task):
    name = "countdown"
    reward = "countdown"
    defaults: ClassVar[dict[str, Any]] = {"count": 3, "max_number": 20, "max_target": 100}
    description = "reach the target from `count` numbers with + - * /, each number used at most once"

    def check(self, opts: dict[str, Any]) -> None:
        require(2 <= opts["count"] <= 6, self.name, f"count must be between 2 and 6, got {opts['count']}")
        require(opts["max_number"] >= 2, self.name, "max_number must be at least 2")
        require(opts["max_target"] >= 3, self.name, "max_target must be at least 3")

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        while True:
            numbers = [rng.randint(1, opts["max_number"]) for _ in range(opts["count"])]
            pool = [_Node(v, str(v)) for v in numbers]
            steps = []
            while len(pool) > 1:  # combine two random items with an operation that keeps integers positive
                x, y = (pool.pop(rng.randrange(len(pool))) for _ in range(2))
                if x.value < y.value:
                    x, y = y, x
                ops = (
                    ["+", "*"]
                    + (["-"] if x.value > y.value else [])
                    + (["/"] if y.value > 1 and x.value % y.value == 0 else [])
                )
                op = rng.choice(ops)
                node = _combine(x, y, op)
                steps.append(f"{x.value} {op} {y.value} = {node.value}")
                pool.append(node)
            target = pool[0].value
            if 1 <= target <= opts["max_target"] and target not in numbers:
                break
        prompt = (
            f"Using the numbers {', '.join(map(str, numbers))}, make {target} with + - * /. "
            f"Use each number at most once. {format_instruction('expression')}"
        )
        key = f"{sorted(numbers)}->{target}"
        record = {
            "prompt": prompt,
            "answer": pool[0].expr,
            "numbers": numbers,
            "target": target,
            "difficulty": opts["count"],  # numbers to combine: what curricula order by (difficulty_weighted)
            "_steps": steps,
        }
        return key, record

    def solve(self, record: dict) -> str:
        return "\n".join([*record["_steps"], f"{ANSWER_PREFIX} {record['answer']}"])
