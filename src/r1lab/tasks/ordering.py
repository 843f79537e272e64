"""Ordering: sort numbers from smallest to largest. Partial credit for every position placed right."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, Task, format_instruction, require


@TASKS.register("ordering")
class Ordering(Task):
    name = "ordering"
    reward = "ordering"
    defaults: ClassVar[dict[str, Any]] = {"count": 5, "max_number": 99}
    description = "sort `count` distinct numbers ascending; reward = fraction of positions right"

    def check(self, opts: dict[str, Any]) -> None:
        require(2 <= opts["count"] <= 20, self.name, f"count must be between 2 and 20, got {opts['count']}")
        require(opts["max_number"] >= opts["count"], self.name, "max_number must be at least count")

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        numbers = rng.sample(range(1, opts["max_number"] + 1), opts["count"])
        answer = ", ".join(map(str, sorted(numbers)))
        prompt = (
            f"Sort these numbers from smallest to largest: {', '.join(map(str, numbers))}. "
            f"{format_instruction('numbers')}"
        )
        return answer, {"prompt": prompt, "answer": answer, "numbers": numbers}

    def solve(self, record: dict) -> str:
        """Selection sort, one line per pick: `Smallest of 42, 7, 19 is 7`."""
        left, lines = list(record["numbers"]), []
        while len(left) > 1:
            smallest = min(left)
            lines.append(f"Smallest of {', '.join(map(str, left))} is {smallest}")
            left.remove(smallest)
        return "\n".join([*lines, f"{ANSWER_PREFIX} {record['answer']}"])
