"""Self-sampled SFT data (`r1lab data distill MODEL --task T --k K`): rejection sampling / STaR. Sample k
solutions per prompt from any model (the policy itself or a larger teacher), keep the verified-correct ones
(the reward's accuracy: >= 1), drop duplicates by normalised text, keep at most m per prompt, and write
prompt + completion records with their provenance (model, sampling settings, reward, which sample).

Candidates are the eval runner's rows: k samples at the given temperature plus its one greedy completion per
prompt (a correct greedy solution is as good a demonstration). A model whose outputs never verify is an error
(the counts are printed), never an empty file passed on as data.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, EvalConfig, ModelConfig, RewardSpec
from r1lab.data import build_prompt_dataset, write_jsonl
from r1lab.errors import UserError
from r1lab.eval.runner import generate_and_score
from r1lab.models import load_model, load_tokenizer
from r1lab.rewards import RewardRunner
from r1lab.tasks import get_task
from r1lab.training.tracking import console


@dataclass
class DistillOptions:
    model: str
    out: Path
    task: str | None = None  # a built-in task: its `n` generated problems of `split`
    data: str | None = None  # or a prompt file (with the columns its rewards need)
    rewards: list[str] = field(default_factory=list)  # default: the task's reward
    n: int = 200  # problems generated for --task
    split: str = "train"
    seed: int = 0
    k: int = 8  # samples per prompt
    m: int = 1  # kept per prompt at most
    temperature: float = 0.7
    max_new_tokens: int = 256
    batch_size: int = 8


def normalised(text: str) -> str:
    """The text duplicates are compared by: case and runs of white space folded."""
    return re.sub(r"\s+", " ", text).strip().lower()


def distill(opts: DistillOptions) -> dict[str, Any]:
    """Sample, verify, deduplicate and write; returns the counts."""
    if not opts.task and not opts.data:
        raise UserError("distill needs prompts", where="--task / --data", fix="give --task T or --data FILE")
    task = get_task(opts.task) if opts.task else None
    specs = [RewardSpec(name=r) for r in opts.rewards] or ([RewardSpec(name=task.reward)] if task else [])
    if not specs:
        raise UserError("distill on a data file needs a reward to verify with", where="--reward",
                        fix="name one, e.g. --reward math")  # fmt: skip
    model_cfg = ModelConfig(path=opts.model)
    tokenizer = load_tokenizer(model_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        source = opts.data or str(
            write_jsonl(Path(tmp) / "problems.jsonl", task.generate(opts.n, seed=opts.seed, split=opts.split))
        )
        system = task.system_prompt if task else None
        data = DataConfig(path=source, shuffle=False, max_length=1 << 20, system_prompt=system)
        prompts = list(build_prompt_dataset(data, tokenizer))
    cfg = EvalConfig(
        data=source, n=opts.k, k=[1], temperature=opts.temperature, max_new_tokens=opts.max_new_tokens,
        batch_size=opts.batch_size,
    )  # fmt: skip
    with RewardRunner(specs) as rewards:
        rewards.check_columns(set.intersection(*(set(p.columns) for p in prompts)))
        model, tokenizer = load_model(model_cfg, trainable=False)
        rows = generate_and_score(model, tokenizer, prompts, cfg, rewards)
    provenance = {
        "model": opts.model,
        "temperature": opts.temperature,
        "max_new_tokens": opts.max_new_tokens,
        "k": opts.k,
        "rewards": [s.name for s in specs],
        "source": f"task {opts.task} ({opts.split}, seed {opts.seed})" if task else opts.data,
    }
    kept, seen = [], set()
    per_prompt: dict[int, int] = {}
    correct = 0
    for row in rows:
        if not row["correct"]:
            continue
        correct += 1
        key = (row["problem"], normalised(row["completion"]))
        if key in seen or per_prompt.get(row["problem"], 0) >= opts.m:
            continue
        seen.add(key)
        per_prompt[row["problem"]] = per_prompt.get(row["problem"], 0) + 1
        columns = prompts[row["problem"]].columns
        kept.append(
            {**columns, "prompt": row["prompt"], "completion": row["completion"],
             "provenance": {**provenance, "sample": row["kind"], "problem": row["problem"]}}
        )  # fmt: skip
    counts = {"prompts": len(prompts), "samples": len(rows), "correct": correct, "kept": len(kept),
              "prompts_kept": len(per_prompt)}  # fmt: skip
    console.print(
        f"distill: {correct} of {len(rows)} samples verified ({len(prompts)} prompts x ({opts.k} + 1 greedy)); "
        f"{len(kept)} kept after deduplication and at most {opts.m} per prompt, for {len(per_prompt)} prompts"
    )
    if not kept:
        raise UserError(
            f"no sample of {opts.model} verified: 0 of {len(rows)} were correct under {provenance['rewards']}, "
            f"so no file was written",
            where="MODEL / --reward",
            fix="use a stronger model or teacher, more samples (--k), a higher --max-new-tokens, or easier prompts",
        )
    write_jsonl(opts.out, kept)
    return counts
