"""RL periodic eval: the policy's greedy accuracy and mean reward on the held-out prompts (data.eval_path, or
data.eval_fraction of the data), scored with the run's own rewards.

It reuses `r1lab eval`'s generate-and-score and summary, so `eval/accuracy` in metrics.jsonl means what
`r1lab eval` reports on the same prompts (greedy decoding up to rollout.max_new_tokens, without the rollout's
stop strings, as `r1lab eval`; correct when the accuracy reward gives >= 1). The loop logs it every train.eval_every steps and after the last step. Each rank
scores a contiguous share of the prompts; the rows are gathered so every rank returns the same metrics.
With rollout.tools each prompt is one greedy episode with the run's tools (its last model turn scored, as in
training), and eval/tools/* report the episodes' tool calls, errors, turns and endings.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from r1lab.config import EvalConfig, RLConfig
from r1lab.stages.rl_batch import episode_columns, split_even
from r1lab.stages.rl_episodes import tool_metrics, with_tools
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
    mine = [prompts[i] for i in share]
    score = generate_and_score if not cfg.rollout.tools else partial(_score_episodes, rl=cfg)
    rows = score(policy, tokenizer, mine, eval_cfg, runner) if share else []
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
    return out | tool_metrics([r["episode"] for r in rows if "episode" in r], prefix="eval/tools/")


def _score_episodes(
    policy: Any, tokenizer: Any, prompts: list[Any], eval_cfg: EvalConfig, runner: Any, rl: RLConfig
) -> list[dict]:
    """rollout.tools: one greedy episode per prompt (the run's tools, max_turns and token budgets), its last
    model turn scored by the run's rewards; rows as `r1lab eval`'s generate_and_score writes them (what
    summarize reads), each with its episode's extras under "episode"."""
    from r1lab.rollout import SamplingParams, make_engine

    engine = with_tools(rl, make_engine(rl.rollout, policy, tokenizer, seed=0), tokenizer)
    greedy = SamplingParams.greedy(eval_cfg.max_new_tokens)
    rows: list[dict] = []
    for first in range(0, len(prompts), eval_cfg.batch_size):
        chunk = prompts[first : first + eval_cfg.batch_size]
        out = engine.generate([p.prompt_ids for p in chunk], 1, greedy)
        extras = out.extras or [{} for _ in chunk]
        columns = [
            {**p.columns, **episode_columns(x), "completion_length": n, "max_completion_length": greedy.max_new_tokens}
            for p, x, n in zip(chunk, extras, out.completion_lengths, strict=True)
        ]  # fmt: skip
        scored = runner.score(out.texts, [p.prompt_text for p in chunk], columns)
        failed: dict[int, list[str]] = {}
        for e in scored.errors:
            failed.setdefault(e["index"], []).append(e["reward"])
        for i, text in enumerate(out.texts):
            total = float(scored.total[i])
            rows.append({
                "problem": first + i, "kind": "greedy", "completion": text,
                "reward": total if math.isfinite(total) else None,
                "rewards": {k: v[i] for k, v in scored.per_function.items()},
                "correct": scored.accuracy is not None and bool(scored.accuracy[i].item() == 1.0),
                "format_ok": None if scored.answer_found is None else scored.answer_found[i],
                "reward_failures": failed.get(i, []), "length": out.completion_lengths[i],
                "finish_reason": out.finish_reasons[i], "episode": extras[i],
            })  # fmt: skip
    return rows
