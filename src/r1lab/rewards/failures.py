"""Reward failures made visible: the first failure of each function is printed with its exception text, every
failure is written with its inputs to `reward_errors.jsonl`, and the totals are printed when the runner closes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from r1lab.data.jsonl import write_jsonl

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
        records = []
        for e in errors:
            label, i = e["reward"], e["index"]
            if label not in self.counts:
                self._print_first(label, e["error"], completions[i])
            self.counts[label] = self.counts.get(label, 0) + 1
            record = {"batch": self.batches, "index": i, "reward": label, "error": e["error"]}
            record.update(completion=completions[i], prompt=prompts[i], columns=columns[i])
            records.append(record)
        if self.path is not None:
            write_jsonl(self.path, records, append=True)

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
