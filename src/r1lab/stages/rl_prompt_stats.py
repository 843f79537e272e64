"""Per-prompt running accuracy of an RL run (Metis-RISE's first half): `prompt_stats.jsonl` in the stage folder.

After every step, one line per training prompt rolled out in it (every generation round, refills included):
`{"step", "prompt" (its index in the run's prompt list), "text", "n" (rollouts), "correct" (verified by the
accuracy reward: >= 1)}`, plus, on the first line of a prompt, its `solution` (the data's written one, the
`completion` column, or null) and its other `columns` (what the rewards read: a teacher's samples are verified
with them) and, the first time one of its rollouts verifies, that `completion`.
A prompt's accuracy is its correct / n summed over its lines (`read_prompt_stats`). A resumed run first drops the
lines of the steps after its checkpoint (as samples.jsonl), so the file always matches the weights it goes on from.
`r1lab data metis` (r1lab.stages.metis) builds the targeted SFT data from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1lab.data.jsonl import write_jsonl
from r1lab.rewards.runner import is_correct
from r1lab.stages.rl_log import drop_samples_after

FILE = "prompt_stats.jsonl"


@dataclass
class PromptAccuracy:
    """One prompt's totals over a run."""

    text: str
    n: int = 0
    correct: int = 0
    completion: str | None = None  # one verified-correct rollout, the first seen
    solution: str | None = None  # the data's written solution
    columns: dict[str, Any] | None = None  # the reward columns (gold answer...)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def read_prompt_stats(path: Path) -> dict[int, PromptAccuracy]:
    """The totals per prompt index of a prompt_stats.jsonl."""
    totals: dict[int, PromptAccuracy] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        acc = totals.setdefault(int(row["prompt"]), PromptAccuracy(row["text"]))
        acc.n += int(row["n"])
        acc.correct += int(row["correct"])
        acc.completion = acc.completion or row.get("completion")
        acc.solution = acc.solution or row.get("solution")
        acc.columns = acc.columns or row.get("columns")
    return totals


class PromptStats:
    """Appends each step's per-prompt counts (main process only; the scored rounds are already gathered)."""

    def __init__(self, out: Path, prompts: list[Any], order: Callable[[int], int], runner: Any, step: int):
        self.path, self.prompts, self.order = out / FILE, prompts, order
        self.label = runner.accuracy_label  # the reward whose >= 1 is "verified correct" (as in eval)
        drop_samples_after(self.path, step)  # a fresh run (step 0) starts an empty file
        seen = read_prompt_stats(self.path) if self.path.exists() else {}
        self.seen = set(seen)
        self.solved = {i for i, acc in seen.items() if acc.completion is not None}

    def update(self, step: int, rounds: list[Any]) -> None:
        """Add the rollouts of `rounds` (this step's Scored rounds)."""
        rows: dict[int, dict[str, Any]] = {}
        for scored in rounds:
            values = scored.per_function.get(self.label, [None] * len(scored.rollouts.texts))
            for position, text, value in zip(
                scored.rollouts.prompt_index, scored.rollouts.texts, values, strict=True
            ):
                index = self.order(position)
                row = rows.setdefault(index, self._row(step, index))
                row["n"] += 1
                if is_correct(value):
                    row["correct"] += 1
                    if index not in self.solved:
                        self.solved.add(index)
                        row["completion"] = text
        write_jsonl(self.path, rows.values(), append=True)

    def _row(self, step: int, index: int) -> dict[str, Any]:
        prompt = self.prompts[index]
        row: dict[str, Any] = {"step": step, "prompt": index, "text": prompt.prompt_text}
        row |= {"n": 0, "correct": 0}
        if index not in self.seen:
            self.seen.add(index)
            row["solution"] = written_solution(prompt.columns)
            row["columns"] = {k: v for k, v in prompt.columns.items() if k != "data_completion"}
        return row


def written_solution(columns: dict[str, Any]) -> str | None:
    """A prompt's written solution: the reference completion of prompt + completion data (task files)."""
    value = columns.get("data_completion")
    return value if isinstance(value, str) and value.strip() else None
