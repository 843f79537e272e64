"""Reward failures made visible: the first failure of each function is printed with its exception text, every
failure is written with its inputs to `reward_errors.jsonl`, and the totals are printed when the runner closes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

_console = Console(stderr=True, highlight=False)
_SHOWN = 200  # characters of a completion quoted in the printed message


class FailureLog:
    """Counts failed calls per reward label; `path` (optional) receives one JSON line per failure."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.counts: dict[str, int] = {}
        self.batches = 0

    def record(
        self, errors: list[dict[str, Any]], completions: list[str], prompts: list[str], columns: list[dict]
    ) -> None:
        """Log the failures of one scored batch (errors as RewardBatch.errors: index, reward, error)."""
        self.batches += 1
        if not errors:
            return
        lines = []
        for e in errors:
            label, i = e["reward"], e["index"]
            if label not in self.counts:
                self._print_first(label, e["error"], completions[i])
            self.counts[label] = self.counts.get(label, 0) + 1
            record = {"batch": self.batches, "index": i, "reward": label, "error": e["error"]}
            record.update(completion=completions[i], prompt=prompts[i], columns=columns[i])
            lines.append(json.dumps(record, default=str) + "\n")
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.writelines(lines)

    def _print_first(self, label: str, error: str, completion: str) -> None:
        quoted = completion if len(completion) <= _SHOWN else completion[:_SHOWN] + "…"
        where = f"; every failure goes to {self.path}" if self.path else ""
        _console.print(
            f"[yellow]reward {label!r} failed[/yellow]: {error}\n  on the completion {quoted!r}\n"
            f"  (shown once; further failures are counted{where})"
        )

    def summary(self) -> None:
        """Print the failure totals (nothing when every call succeeded)."""
        if not self.counts:
            return
        counts = ", ".join(f"{label!r} {n}" for label, n in self.counts.items())
        where = f" (inputs and errors in {self.path})" if self.path else ""
        _console.print(f"[yellow]reward failures[/yellow]: {counts} failed calls{where}")
