"""What the RL loop writes each step: the metrics record (metrics.jsonl) and sample completions (samples.jsonl);
where failed reward calls go (reward_errors.jsonl), and the stop when a reward fails on every call."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from r1lab.config import RLConfig
from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError
from r1lab.rewards.runner import is_correct
from r1lab.stages.rl_batch import Scored, flat_groups
from r1lab.stages.rl_episodes import tool_metrics

ERRORS_FILE = "reward_errors.jsonl"


def step_metrics(
    batch: Scored, generated: list[Scored], sums: dict[str, torch.Tensor], runner: Any
) -> dict[str, float]:
    """Reward and length statistics over everything generated this step; loss-side means over trained tokens."""
    rewards = torch.cat([s.rewards for s in generated]).float()
    groups = [g for s in generated for g in s.rollouts.prompt_index]
    lengths = torch.tensor([n for s in generated for n in s.rollouts.completion_lengths], dtype=torch.float)
    reasons = [r for s in generated for r in s.rollouts.finish_reasons]
    valid = rewards[~rewards.isnan()]
    out: dict[str, float] = {
        "reward/mean": float(valid.mean()) if valid.numel() else math.nan,
        "reward/std": float(valid.std()) if valid.numel() > 1 else 0.0,
        "frac_zero_std_groups": len(flat_groups(rewards, groups)) / max(len(set(groups)), 1),
        "completion_length/mean": float(lengths.mean()),
        "completion_length/min": float(lengths.min()),
        "completion_length/max": float(lengths.max()),
        "clipped_ratio": sum(r == "length" for r in reasons) / max(len(reasons), 1),
        "groups_trained": len(set(batch.rollouts.prompt_index)),
    }
    per_function: dict[str, list[float | None]] = {}
    for s in generated:
        for name, values in s.per_function.items():
            per_function.setdefault(name, []).extend(values)
        for name, count in s.failures.items():
            out[f"reward/{name}/failures"] = out.get(f"reward/{name}/failures", 0) + count
    for name, values in per_function.items():
        scores = torch.tensor([v for v in values if v is not None], dtype=torch.float)
        out[f"reward/{name}/mean"] = float(scores.mean()) if scores.numel() else math.nan
        out[f"reward/{name}/std"] = float(scores.std()) if scores.numel() > 1 else 0.0
    accuracy_name = getattr(runner, "accuracy_label", None)  # the one rule: rewards.runner.accuracy_index
    if accuracy_name in per_function:
        values = per_function[accuracy_name]
        out["accuracy"] = sum(map(is_correct, values)) / max(len(values), 1)
    tokens = float(sums.get("tokens", torch.tensor(0.0)))
    for key, value in sums.items():
        if key == "loss":  # already normalised by the policy loss; ~0 when mu == 1 (log reward, not loss)
            out["loss"] = float(value)
        elif key != "tokens":  # token sums -> per-token means (clip fractions, ratio, kl, entropy)
            # nan when no row was trained (every advantage 0): no token to average over
            out[_METRIC_NAMES.get(key, key)] = float(value) / tokens if tokens else math.nan
    out["tokens_trained"] = tokens
    return out | tool_metrics([x for s in generated for x in s.rollouts.extras or []])  # episodes: tools/*


_METRIC_NAMES = {
    "clip_low": "clip_ratio/low",
    "clip_high": "clip_ratio/high",
    "clip_region": "clip_ratio/region",
}


def reward_errors_path(cfg: RLConfig) -> Path:
    """reward_errors.jsonl in the stage's output folder; rank k > 0 of a multi-process run writes its own
    reward_errors.rank<k>.jsonl (each rank scores its own share of the completions)."""
    rank = int(os.environ.get("RANK", "0") or 0)
    name = ERRORS_FILE if rank == 0 else ERRORS_FILE.replace(".jsonl", f".rank{rank}.jsonl")
    return Path(cfg.train.output_dir) / name


class RewardFailureStop:
    """Stops the run (UserError) once a reward failed on every call for `limit` steps in a row: a reward that
    always raises or times out scores nothing, so training on would only spend compute on a constant reward.

    It reads the gathered step (identical on every rank), so all ranks stop at the same step.
    """

    def __init__(self, limit: int, out: Path) -> None:
        self.limit, self.out = limit, out
        self.in_row: dict[str, int] = {}

    def check(self, step: int, generated: list[Scored]) -> None:
        calls: dict[str, int] = {}
        failed: dict[str, int] = {}
        for s in generated:
            for name, values in s.per_function.items():
                calls[name] = calls.get(name, 0) + len(values)
                failed[name] = failed.get(name, 0) + s.failures.get(name, 0)
        for name, n in calls.items():
            self.in_row[name] = self.in_row.get(name, 0) + 1 if n and failed[name] == n else 0
            if self.in_row[name] >= self.limit:
                raise self._error(name, step, generated)

    def _error(self, name: str, step: int, generated: list[Scored]) -> UserError:
        last = next(
            (e["error"] for s in reversed(generated) for e in reversed(s.errors) if e["reward"] == name), ""
        )
        first = step - self.in_row[name] + 1
        return UserError(
            f"reward {name!r} failed on every call for {self.in_row[name]} steps in a row (steps {first}-{step}), "
            f"so it scored nothing and the run stopped; its last error: {last}",
            where=str(self.out / ERRORS_FILE),
            fix="fix the reward function (every failure is in that file with its inputs), raise its timeout if "
            "it timed out, or raise max_reward_failure_steps",
        )


def write_samples(path: Path, step: int, batch: Scored, advantages: torch.Tensor) -> None:
    """Append this step's completions with their rewards (one JSON line per completion)."""
    records = [
        {
            "step": step,
            "group": batch.rollouts.prompt_index[i],
            "prompt": batch.prompt_texts[i],
            "completion": text,
            "reward": _num(float(batch.rewards[i])),
            "rewards": {k: v[i] for k, v in batch.per_function.items()},
            "advantage": float(advantages[i]),
            "finish_reason": batch.rollouts.finish_reasons[i],
            "length": batch.rollouts.completion_lengths[i],
            # an episode: the whole of it (model turns and tool results), its tool counts and how it ended
            **(batch.rollouts.extras[i] if batch.rollouts.extras else {}),
        }
        for i, text in enumerate(batch.rollouts.texts)
    ]
    write_jsonl(path, records, append=True)


def drop_samples_after(path: Path, step: int) -> None:
    """A resumed run rewrites the steps after its checkpoint: drop their old samples (all of them when fresh)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines() if step else []
    path.write_text("".join(line + "\n" for line in lines if line and json.loads(line)["step"] <= step))


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None
