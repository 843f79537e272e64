"""Multi-digit addition and multiplication, solved column by column as on paper."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, Task, format_instruction, require


def _number(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)


def add_steps(a: int, b: int) -> list[str]:
    """Column addition from the ones digit up: `7 + 6 = 13, write 3, carry 1`; the last column writes all."""
    da, db = str(a)[::-1], str(b)[::-1]
    lines, carry = [], 0
    for i in range(max(len(da), len(db))):
        terms = [d for d in (da[i : i + 1], db[i : i + 1]) if d] + ([str(carry)] if carry else [])
        total = sum(int(t) for t in terms)
        expr = " + ".join(terms) if len(terms) > 1 else f"{terms[0]} + 0"
        if i == max(len(da), len(db)) - 1:
            lines.append(f"{expr} = {total}, write {total}")
        else:
            carry = total // 10
            lines.append(f"{expr} = {total}, write {total % 10}" + (f", carry {carry}" if carry else ""))
    return lines


def mul_digit_steps(a: int, d: int) -> list[str]:
    """Column multiplication by one digit: `7 * 6 = 42, write 2, carry 4`; the last column writes all."""
    da = str(a)[::-1]
    lines, carry = [], 0
    for i, digit in enumerate(da):
        total = int(digit) * d + carry
        expr = f"{digit} * {d}" + (f" + {carry}" if carry else "")
        if i == len(da) - 1:
            lines.append(f"{expr} = {total}, write {total}")
        else:
            carry = total // 10
            lines.append(f"{expr} = {total}, write {total % 10}" + (f", carry {carry}" if carry else ""))
    return lines


class _Arithmetic(Task):
    reward = "arithmetic"
    op = "+"

    def check(self, opts: dict[str, Any]) -> None:
        for key in ("digits", "digits_b"):
            value = opts[key]
            require(
                value is None or 1 <= value <= 12, self.name, f"{key} must be between 1 and 12, got {value}"
            )

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        a = _number(rng, opts["digits"])
        b = _number(rng, opts["digits_b"] or opts["digits"])
        if self.op == "*" and b < 10:
            b = rng.randint(2, 9)  # times 0 or 1 teaches nothing
        answer = a + b if self.op == "+" else a * b
        prompt = f"What is {a} {self.op} {b}? {format_instruction('number')}"
        key = f"{min(a, b)}{self.op}{max(a, b)}"  # a+b and b+a are the same problem
        return key, {"prompt": prompt, "answer": str(answer), "a": a, "b": b, "op": self.op}


@TASKS.register("addition")
class Addition(_Arithmetic):
    name = "addition"
    op = "+"
    defaults: ClassVar[dict[str, Any]] = {
        "digits": 3,
        "digits_b": None,
    }  # digits of a and of b (None: same as a)
    description = "a + b, added column by column with carries"

    def solve(self, record: dict) -> str:
        lines = add_steps(record["a"], record["b"])
        return "\n".join([*lines, f"{ANSWER_PREFIX} {record['answer']}"])


@TASKS.register("multiplication")
class Multiplication(_Arithmetic):
    name = "multiplication"
    op = "*"
    defaults: ClassVar[dict[str, Any]] = {"digits": 3, "digits_b": 1}
    description = "a * b, by column multiplication with one digit, partial products for longer b"

    def solve(self, record: dict) -> str:
        a, b = record["a"], record["b"]
        if b < 10:
            lines = mul_digit_steps(a, b)
        else:  # one partial product per digit of b, then their sum
            parts = [(int(d) * 10**i) for i, d in enumerate(str(b)[::-1]) if d != "0"]
            lines = [f"{a} * {p} = {a * p}" for p in parts]
            if len(parts) > 1:
                lines.append(" + ".join(str(a * p) for p in parts) + f" = {a * b}")
        return "\n".join([*lines, f"{ANSWER_PREFIX} {record['answer']}"])
