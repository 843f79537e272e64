"""Rewards of the built-in tasks (r1lab.tasks): all read the shared final line `Answer: <x>`.

`arithmetic` exact integer, `countdown` a checked expression (parsed with ast, never eval'd), `countdown_partial`
the same with dense partial credit (curricula), `ordering` partial credit per position, `answer_format` whether
the completion ends in an answer line.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.registry import reward
from r1lab.tasks.base import extract_answer, has_answer_line

_INT = re.compile(r"-?\d+")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
MAX_EXPRESSION_CHARS = 200  # longer answers are not countdown expressions; also bounds the parse cost


def _ints(value: Any) -> list[int]:
    """A list column as ints: [3, 5] from a JSON list, or "3, 5" from a CSV cell."""
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return [int(v) for v in _INT.findall(str(value))]


def has_answer(completion: str, **_: Any) -> bool:
    """Whether the completion has an `Answer:` line for the task rewards to read."""
    return extract_answer(completion) is not None


@reward("arithmetic", columns=("answer",), correctness=True, parses=has_answer)
def arithmetic_reward(completion: str, *, answer: Any, **_: Any) -> float:
    """1.0 if the answer line holds the gold integer (thousands separators and spaces ignored), else 0.0."""
    found = extract_answer(completion)
    if found is None:
        return 0.0
    found = found.replace(",", "").replace(" ", "").rstrip(".")
    return float(bool(_INT.fullmatch(found)) and int(found) == int(str(answer).strip()))


def evaluate_expression(expression: str) -> tuple[Fraction, list[int]] | None:
    """Exact value and the numbers used of an expression of integers, + - * / and parentheses.

    None when the text is anything else (names, calls, powers, unary minus) or divides by zero.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError:
        return None
    used: list[int] = []

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            op = _OPS[type(node.op)]
            if op == "/":
                return left / right  # ZeroDivisionError handled below
            return left + right if op == "+" else left - right if op == "-" else left * right
        raise ValueError(f"not allowed in a countdown expression: {ast.dump(node)}")

    try:
        return value(tree.body), used
    except (ValueError, ZeroDivisionError):
        return None


@reward("countdown", columns=("numbers", "target"), correctness=True, parses=has_answer)
def countdown_reward(completion: str, *, numbers: Any, target: Any, **_: Any) -> float:
    """1.0 if the answer is an expression that uses only the given numbers, each at most once, and equals
    the target; "expr = target" is accepted. 0.0 otherwise."""
    found = extract_answer(completion)
    if found is None:
        return 0.0
    result = evaluate_expression(found.split("=")[0].strip())
    if result is None:
        return 0.0
    total, used = result
    if Counter(used) - Counter(_ints(numbers)):  # a number not given, or used more often than given
        return 0.0
    return float(total == int(target))


def _check_partial(kwargs: dict[str, Any]) -> None:
    credit, near = kwargs.get("format_credit", 0.1), kwargs.get("near_credit", 0.5)
    for key, value in (("format_credit", credit), ("near_credit", near)):
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise UserError(
                f"countdown_partial: {key} must be a number in [0, 1), got {value!r}",
                where=f"rewards[].kwargs.{key}",
                fix="a wrong answer must earn less than a right one (1.0), e.g. format_credit: 0.1, near_credit: 0.5",
            )
    if near < credit:
        raise UserError(
            f"countdown_partial: near_credit ({near}) is below format_credit ({credit})",
            where="rewards[].kwargs.near_credit",
            fix="a valid expression must earn at least what an answer line alone does",
        )


@reward(
    "countdown_partial",
    columns=("numbers", "target"),
    correctness=True,
    check=_check_partial,
    parses=has_answer,
)
def countdown_partial_reward(
    completion: str,
    *,
    numbers: Any,
    target: Any,
    format_credit: float = 0.1,
    near_credit: float = 0.5,
    **_: Any,
) -> float:
    """Dense partial credit for Countdown: 1.0 for a right expression (as `countdown`); a valid expression of the
    given numbers that misses earns format_credit + (near_credit - format_credit) * max(0, 1 - |value - target| /
    target), so nearer is better but below near_credit; an answer line that is no valid expression (a number
    not given or reused, not parseable) earns format_credit; no answer line 0.0."""
    found = extract_answer(completion)
    if found is None:
        return 0.0
    result = evaluate_expression(found.split("=")[0].strip())
    if result is None or Counter(result[1]) - Counter(_ints(numbers)):
        return float(format_credit)
    goal = int(target)
    if result[0] == goal:
        return 1.0
    closeness = max(Fraction(0), 1 - abs(result[0] - goal) / max(abs(goal), 1))
    return float(format_credit + (near_credit - format_credit) * closeness)


@reward("ordering", columns=("answer",), correctness=True, parses=has_answer)
def ordering_reward(completion: str, *, answer: Any, **_: Any) -> float:
    """Partial credit: the fraction of positions holding the gold number (1.0 = sorted); extra numbers count
    as wrong positions, so listing more than asked never helps."""
    gold = _ints(answer)
    found = extract_answer(completion)
    if found is None or not gold:
        return 0.0
    given = _ints(found)
    return sum(g == x for g, x in zip(gold, given, strict=False)) / max(len(gold), len(given))


@reward("answer_format")
def answer_format_reward(completion: str, **_: Any) -> float:
    """1.0 if the completion's last non-empty line is `Answer: <something>` (the built-in tasks' format)."""
    return float(has_answer_line(completion))
