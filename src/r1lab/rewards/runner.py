"""Score a batch of completions with several rewards: weighted sum, per-function values, failures isolated."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards.failures import FailureLog
from r1lab.rewards.loader import ALWAYS_SUPPLIED, LoadedReward, load_reward, missing_columns
from r1lab.rewards.worker import Batch, Call, Result, Worker, evaluate


@dataclass
class RewardBatch:
    """Rewards for N completions.

    total: weighted sum per sample; a None (not applicable) counts as 0, but a sample where every reward
        returned None is NaN (the advantage estimators give it advantage 0).
    per_function: label -> value per sample (None: not applicable; a failed call holds its failure_reward).
    failures: label -> number of failed calls (raised, timed out, wrong type).
    errors: one dict per failed call: {"index": sample, "reward": label, "error": message}.
    accuracy: 1/0 per sample from the accuracy reward (`accuracy_index`; `is_correct` of its value).
    answer_found: per sample, whether the accuracy reward could read an answer (its `parses` check; None
        where the check failed); None when that reward has no such check.
    """

    total: torch.Tensor
    per_function: dict[str, list[float | None]]
    failures: dict[str, int]
    errors: list[dict[str, Any]] = field(default_factory=list)
    accuracy: torch.Tensor | None = None
    answer_found: list[bool | None] | None = None

    def metrics(self) -> dict[str, float]:
        """Scalars for metrics.jsonl: means over the samples where each value applies."""
        out = {"reward": _nanmean(self.total.tolist())}
        for label, values in self.per_function.items():
            out[f"reward/{label}"] = _nanmean([math.nan if v is None else v for v in values])
            out[f"reward/{label}/none_frac"] = sum(v is None for v in values) / max(len(values), 1)
            out[f"reward/{label}/failures"] = float(self.failures[label])
        if self.accuracy is not None:
            out["accuracy"] = _nanmean(self.accuracy.tolist())
        return out


def accuracy_index(rewards: Sequence[LoadedReward]) -> int | None:
    """The one rule for which reward is reported as accuracy (RL metrics, eval): the first reward marked as a
    correctness check (built-in `math`, `exact`, the tasks' rewards; a user function with `fn.correctness =
    True`), else the first reward that is not a learned one (model:PATH), else the first reward. None only
    when there are no rewards."""
    marked = [i for i, r in enumerate(rewards) if r.correctness]
    verifiable = [i for i, r in enumerate(rewards) if not r.in_process]
    return (marked or verifiable or [0])[0] if rewards else None


def is_correct(value: float | None) -> bool:
    """A sample is correct when the accuracy reward gives it >= 1; None (not applicable) is not correct."""
    return value is not None and value >= 1.0


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


class RewardRunner:
    """Loads the reward functions of a config and scores batches with them.

    isolated=True (default) runs the functions in a worker process, so each call is held to its spec's timeout;
    isolated=False calls them in this process (no timeout; handy for a debugger).
    errors_path: where every failed call is written with its inputs (JSON lines, appended); the first failure
    of each function is printed either way, and the totals when the runner closes.
    Use it as a context manager, or call close(), to stop the worker.
    """

    def __init__(
        self, specs: Sequence[RewardSpec], *, isolated: bool = True, errors_path: Path | str | None = None
    ) -> None:
        if not specs:
            raise UserError(
                "no reward functions configured", where="rewards", fix="e.g. rewards: [{name: math}]"
            )
        self.rewards: list[LoadedReward] = [load_reward(s) for s in specs]
        self.labels = _unique([r.label for r in self.rewards])
        self.accuracy_index = accuracy_index(self.rewards)
        self.accuracy_label = None if self.accuracy_index is None else self.labels[self.accuracy_index]
        # the accuracy reward's `parses` check runs as one more function, after the rewards
        check = self.rewards[self.accuracy_index].parse_check() if self.accuracy_index is not None else None
        self.functions = self.rewards + ([check] if check is not None else [])
        self.failure_log = FailureLog(errors_path)
        # learned rewards (model:PATH) are scored batched in this process; the worker gets the others
        self.remote = [r for r, f in enumerate(self.functions) if not f.in_process]
        remote_fns = [self.functions[r] for r in self.remote]
        self.worker = Worker(remote_fns) if isolated and remote_fns else None
        if self.worker is not None:
            # Fork now, typically before the model is loaded: a small parent forks faster and holds no CUDA state.
            self.worker.start()

    def check_columns(self, available: set[str]) -> None:
        """Raise UserError if a reward needs a column the dataset does not have."""
        self._check(set(available) | ALWAYS_SUPPLIED, "the dataset")

    def _check(self, available: set[str], source: str) -> None:
        missing = missing_columns(self.rewards, available)
        if missing:
            i, reward, column = missing[0]
            raise UserError(
                f"reward {reward.spec.name!r} needs the column {column!r}, which {source} does not have "
                f"(it has: {', '.join(sorted(available)) or 'none'})",
                where=f"rewards[{i}] (name={reward.spec.name!r})",
                fix="map a column to it with data.columns, or point the reward at another column "
                "(e.g. kwargs: {answer_key: solution})",
            )

    def score(self, completions: list[str], prompts: list[str], columns: list[dict[str, Any]]) -> RewardBatch:
        """Score completion j (for prompt j, with dataset columns j) with every reward."""
        n = len(completions)
        if len(prompts) != n or len(columns) != n:
            raise ValueError(
                f"score: {n} completions but {len(prompts)} prompts and {len(columns)} column rows"
            )
        if n:
            self._check(set.intersection(*(set(c) for c in columns)), "the columns passed to score()")
        calls: list[Call] = [
            (r, i) for r, reward in enumerate(self.functions) for i in ([-1] if reward.batched else range(n))
        ]
        batch: Batch = (completions, prompts, columns)
        if self.worker is not None:
            local = [c for c in calls if self.functions[c[0]].in_process]
            index = {r: k for k, r in enumerate(self.remote)}
            sent = [(index[r], i) for r, i in calls if r in index]
            results = [(self.remote[k], *rest) for k, *rest in self.worker.run(batch, sent)] if sent else []
        else:
            local, results = calls, []
        results += [evaluate(self.functions[c[0]], c, batch) for c in local]
        scored = self._assemble(results, n)
        self.failure_log.record(scored.errors, completions, prompts, columns)
        return scored

    def _assemble(self, results: list[Result], n: int) -> RewardBatch:
        values: list[list[float | None]] = [[None] * n for _ in self.functions]
        failed: list[list[str | None]] = [[None] * n for _ in self.functions]
        for r, i, status, payload in results:
            if status == "badlen":
                raise UserError(
                    payload,
                    where=f"rewards[{r}] (name={self.functions[r].spec.name!r})",
                    fix="return exactly one value per completion",
                )
            rows = range(n) if i < 0 else [i]
            items = payload if (i < 0 and status == "ok") else [(status, payload)] * len(rows)
            for row, (item_status, item) in zip(rows, items, strict=True):
                if item_status == "ok":
                    values[r][row] = item
                else:
                    failed[r][row] = item
        total = torch.zeros(n, dtype=torch.float32)
        applies = torch.zeros(n, dtype=torch.bool)
        per_function, failures, errors = {}, {}, []
        for r, (reward, label) in enumerate(zip(self.rewards, self.labels, strict=True)):
            for i, error in enumerate(failed[r]):
                if error is not None:
                    values[r][i] = reward.spec.failure_reward
                    errors.append({"index": i, "reward": label, "error": error})
            per_function[label] = values[r]
            failures[label] = sum(e is not None for e in failed[r])
            given = torch.tensor([math.nan if v is None else v for v in values[r]], dtype=torch.float32)
            applies |= ~given.isnan()
            total += reward.spec.weight * given.nan_to_num(0.0)
        total[~applies] = math.nan
        accuracy = found = None
        if self.accuracy_index is not None:
            raw = values[self.accuracy_index]
            accuracy = torch.tensor([float(is_correct(v)) for v in raw])
        if len(self.functions) > len(self.rewards):  # the parse check: a failed one says nothing
            label = self.labels[self.accuracy_index]  # type: ignore[index]
            found = [None if e is not None else bool(v) for v, e in zip(values[-1], failed[-1], strict=True)]
            errors += [
                {"index": i, "reward": f"{label}/parses", "error": e} for i, e in enumerate(failed[-1]) if e
            ]
        return RewardBatch(total, per_function, failures, errors, accuracy, found)

    def place(self, device: Any) -> None:
        """Move the learned rewards (reward models, scored in this process) onto `device`, e.g. the policy's."""
        for f in self.functions:
            if f.in_process:
                f.fn.to(device)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.failure_log.summary()

    def __enter__(self) -> RewardRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            with contextlib.suppress(Exception):  # at interpreter shutdown multiprocessing may be torn down
                worker.kill()


def _unique(labels: list[str]) -> list[str]:
    """Labels for logs; a repeated one gets a suffix (format, format_2)."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}_{seen[label]}")
    return out
