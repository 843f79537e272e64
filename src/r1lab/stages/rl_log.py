"""What the RL loop writes each step: the metrics record (metrics.jsonl) and sample completions (samples.jsonl)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from r1lab.stages.rl_batch import Scored, flat_groups


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
    accuracy_name = accuracy_reward(runner, list(per_function))
    if accuracy_name is not None:
        values = per_function[accuracy_name]
        out["accuracy"] = sum(v is not None and v >= 1 for v in values) / max(len(values), 1)
    tokens = float(sums.get("tokens", torch.tensor(0.0)))
    for key, value in sums.items():
        if key == "loss":  # already normalised by the policy loss; ~0 when mu == 1 (log reward, not loss)
            out["loss"] = float(value)
        elif key != "tokens":  # token sums -> per-token means (clip fractions, ratio, kl, entropy)
            # nan when no row was trained (every advantage 0): no token to average over
            out[_METRIC_NAMES.get(key, key)] = float(value) / tokens if tokens else math.nan
    out["tokens_trained"] = tokens
    return out


_METRIC_NAMES = {
    "clip_low": "clip_ratio/low",
    "clip_high": "clip_ratio/high",
    "clip_region": "clip_ratio/region",
}


def accuracy_reward(runner: Any, names: list[str]) -> str | None:
    """The reward logged as accuracy: the first one marked as a correctness check, else the first one."""
    for loaded in getattr(runner, "rewards", []):
        if getattr(loaded, "correctness", False) and loaded.label in names:
            return loaded.label
    return names[0] if names else None


def write_samples(path: Path, step: int, batch: Scored, advantages: torch.Tensor) -> None:
    """Append this step's completions with their rewards (one JSON line per completion)."""
    with path.open("a") as f:
        for i, text in enumerate(batch.rollouts.texts):
            record = {
                "step": step,
                "group": batch.rollouts.prompt_index[i],
                "prompt": batch.prompt_texts[i],
                "completion": text,
                "reward": _num(float(batch.rewards[i])),
                "rewards": {k: v[i] for k, v in batch.per_function.items()},
                "advantage": float(advantages[i]),
                "finish_reason": batch.rollouts.finish_reasons[i],
                "length": batch.rollouts.completion_lengths[i],
            }
            f.write(json.dumps(record) + "\n")


def drop_samples_after(path: Path, step: int) -> None:
    """A resumed run rewrites the steps after its checkpoint: drop their old samples (all of them when fresh)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines() if step else []
    path.write_text("".join(line + "\n" for line in lines if line and json.loads(line)["step"] <= step))


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None
