"""What a built-in task is: a seeded generator of problems with gold answers and step-by-step solutions.

Every task uses one answer format: the model shows its steps, then ends with a line `Answer: <x>`.
Train and test problems never overlap: each problem's canonical key is hashed into a split (20% test), and a
split's generator only keeps problems that hash into it, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any, ClassVar

from r1lab.errors import UserError
from r1lab.registry import Registry

ANSWER_PREFIX = "Answer:"
SPLITS = ("train", "test")
TEST_PERCENT = 20
# The last line of the form "Answer: x" (markdown bold tolerated); group 1 is x.
_ANSWER_LINE = re.compile(
    r"^[\s*_#>-]*answer\s*[*_]*\s*:\s*[*_]*\s*(.*?)\s*[*_.]*\s*$", re.IGNORECASE | re.MULTILINE
)


def format_instruction(what: str) -> str:
    """The sentence every prompt ends with, stating the shared answer format."""
    return f'Show your steps, then write the final line as "{ANSWER_PREFIX} <{what}>".'


def extract_answer(text: str) -> str | None:
    """The text after the last `Answer:` line, or None when the completion has none (a format error)."""
    found = _ANSWER_LINE.findall(text)
    return found[-1] if found and found[-1] else None


def has_answer_line(text: str) -> bool:
    """The shared format: the last non-empty line is `Answer: <something>`."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return bool(lines) and extract_answer(lines[-1]) is not None


def split_of(key: str) -> str:
    """The split a problem belongs to, from a hash of its canonical key (stable across runs and machines)."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < TEST_PERCENT else "train"


class Task:
    """A built-in verifiable task. Subclasses set the class attributes and implement `sample` and `solve`."""

    name: str
    reward: str  # default reward (a name in r1lab.rewards.REWARDS)
    system_prompt: str | None = None  # the prompt itself states the answer format
    # difficulty knobs and their defaults, passed to generate as keywords
    defaults: ClassVar[dict[str, Any]] = {}
    description: str = ""

    def generate(self, n: int, seed: int = 0, split: str = "train", **options: Any) -> list[dict]:
        """`n` distinct problems of `split`, the same for the same (seed, split, options).

        Each record: `prompt` (user text stating the format), `answer` (gold), `completion` (step-by-step
        solution ending in the answer line), plus the task's own columns.
        """
        if split not in SPLITS:
            raise UserError(
                f"task {self.name!r} has no split {split!r}", fix=f"use one of: {', '.join(SPLITS)}"
            )
        if n <= 0:
            raise UserError(f"asked for {n} problems of task {self.name!r}", fix="ask for at least 1")
        opts = self.options(options)
        rng = random.Random(f"{self.name}:{seed}:{split}")
        records: list[dict] = []
        seen: set[str] = set()
        for _ in range(50 * n + 2000):
            key, record = self.sample(rng, **opts)
            if key in seen or split_of(key) != split:
                continue
            seen.add(key)
            completion = self.solve(record)
            records.append(
                {k: v for k, v in record.items() if not k.startswith("_")} | {"completion": completion}
            )
            if len(records) == n:
                return records
        raise UserError(
            f"task {self.name!r} with {opts} has too few distinct {split} problems for n={n} "
            f"(found {len(records)})",
            fix=f"ask for fewer problems or make the task harder (knobs: {', '.join(self.defaults)})",
        )

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise UserError(
                f"task {self.name!r} has no option {unknown[0]!r}",
                fix=f"its options are: {', '.join(f'{k} (default {v})' for k, v in self.defaults.items())}",
            )
        opts = {**self.defaults, **given}
        for key, value in opts.items():
            if self.defaults[key] is not None and not isinstance(value, type(self.defaults[key])):
                raise UserError(
                    f"task {self.name!r}: option {key!r} must be a {type(self.defaults[key]).__name__}, "
                    f"got {value!r}"
                )
        self.check(opts)
        return opts

    def check(self, opts: dict[str, Any]) -> None:
        """Raise UserError for option values out of range."""

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        """One random problem: (canonical key, record with prompt, answer and task columns).

        Keys starting with "_" are for `solve` only and are not written out."""
        raise NotImplementedError

    def solve(self, record: dict) -> str:
        """A short step-by-step solution ending in the line `Answer: <gold>`."""
        raise NotImplementedError


def write_jsonl(path: Any, records: Any) -> Any:
    """r1lab.data.jsonl.write_jsonl, imported when called: the r1lab.data package imports torch, and
    `import r1lab.tasks` (data make, the task registry) must not."""
    from r1lab.data.jsonl import write_jsonl as write

    return write(path, records)


def require(cond: bool, task: str, message: str) -> None:
    if not cond:
        raise UserError(f"task {task!r}: {message}", fix="change the option value")


TASKS: Registry = Registry("task")


def get_task(name: str) -> Task:
    """The built-in task called `name` (UserError listing the tasks when there is none)."""
    return TASKS.get(name)()
