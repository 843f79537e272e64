"""RL periodic eval: the policy's greedy accuracy and mean reward on the held-out prompts (data.eval_path, or
data.eval_fraction of the data), scored with the run's own rewards.

It reuses `r1lab eval`'s generate-and-score and summary, so `eval/accuracy` in metrics.jsonl means what
`r1lab eval` reports on the same prompts (greedy decoding up to rollout.max_new_tokens, without the rollout's
stop strings, as `r1lab eval`; correct when the accuracy reward gives >= 1). The loop logs it every train.eval_every steps and after the last step. Each rank
scores a contiguous share of the prompts; the rows are gathered so every rank returns the same metrics.
"""

from __future__ import annotations

from typing import Any

from r1lab.config import EvalConfig, RLConfig
from r1lab.stages.rl_batch import split_even
from r1lab.training.distributed import gather_objects, world


def evaluate_policy(
    policy: Any, tokenizer: Any, prompts: list[Any], runner: Any, cfg: RLConfig
) -> dict[str, float]:
    """`eval/<metric>` for every number in `r1lab eval`'s summary (accuracy, accuracy_ci95 bounds,
    mean_reward, mean_length, truncated_rate, format_error_rate, reward/<label>, num_problems)."""
    from r1lab.eval.runner import generate_and_score, summarize

    batch = {"batch_size": cfg.rollout.batch_size} if cfg.rollout.batch_size else {}
    eval_cfg = EvalConfig(
        data=cfg.data.eval_path or cfg.data.path, max_new_tokens=cfg.rollout.max_new_tokens, **batch
    )
    rank, size = world()
    share = split_even(len(prompts), size)[rank]
    rows = (
        generate_and_score(policy, tokenizer, [prompts[i] for i in share], eval_cfg, runner) if share else []
    )
    for row in rows:
        row["problem"] += share.start
    rows = [row for part in gather_objects(rows) for row in part]
    results = summarize(rows, eval_cfg, len(prompts))
    low, high = results.pop("accuracy_ci95")
    results.update({"accuracy_ci95_low": low, "accuracy_ci95_high": high})
    out = {
        f"eval/{key}": float(value)
        for key, value in results.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    for label, count in (results.get("reward_failures") or {}).items():
        out[f"eval/reward/{label}/failures"] = float(count)
    return out
