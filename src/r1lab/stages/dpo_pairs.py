"""Preference pairs from a verifier (`r1lab data pairs`): sample G completions per prompt, score them with the
reward, and pair a correct completion (chosen) with an incorrect one (rejected).

Correctness is the accuracy reward's verdict (as in eval and RL). A prompt with no correct or no incorrect
sample gives no pair and is counted. Each written row holds the prompt messages, both completions, their
rewards, the prompt's other columns (gold answer...) and the sampling settings, so the file is both DPO
training data (`data.format: preference`) and a record of how it was made.

`sampling.per_step` (`--per-step`): each rejected side is cut after the step where its Monte-Carlo success
rate collapses (stages/dpo_steps.py). `sampling.engine`: the generation engine (hf | vllm), as in eval.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, ModelConfig, RewardSpec, RolloutConfig
from r1lab.data import build_prompt_dataset, read_prompt_data, write_jsonl
from r1lab.errors import UserError
from r1lab.stages.dpo_steps import StepOptions, check_step_options, cut_pairs
from r1lab.training.tracking import console


@dataclass(frozen=True)
class PairSampling:
    n: int = 8  # completions per prompt (G)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16  # prompts per generate call
    seed: int = 0
    pairs_per_prompt: int = 1  # up to this many (correct, incorrect) pairs per prompt, no completion reused
    engine: str = "hf"  # the generation engine: hf | vllm
    per_step: StepOptions | None = None  # cut each rejected sample at its collapse step (stages/dpo_steps.py)


def make_pairs(
    model_path: str,
    out: Path,
    *,
    data: str | None = None,
    task: str | None = None,
    rewards: list[str] | None = None,
    limit: int | None = None,
    split: str = "train",
    sampling: PairSampling = PairSampling(),
) -> dict[str, int]:
    """Write the pairs to `out` (JSONL); returns the counts (prompts, pairs, no_correct, no_incorrect)."""
    import tempfile

    import torch

    from r1lab.models import load_model
    from r1lab.rewards import RewardRunner
    from r1lab.rollout import SamplingParams, make_engine
    from r1lab.tasks import get_task

    if (task is None) == (data is None):
        raise UserError("give either --task T or --data FILE (with --reward)", where="r1lab data pairs")
    found = get_task(task) if task else None
    specs = [RewardSpec(name=r) for r in rewards or []] or ([RewardSpec(name=found.reward)] if found else [])
    if not specs:
        raise UserError("--data needs a reward to score the samples", fix="add --reward math (or another)")
    if sampling.n < 2:
        raise UserError("--n must be at least 2 to find both a correct and an incorrect sample", where="--n")
    check_step_options(sampling.per_step)
    if sampling.engine not in ("hf", "vllm"):
        raise UserError(
            f"unknown engine {sampling.engine!r}", where="r1lab data pairs --engine", fix="hf or vllm"
        )
    model, tokenizer = load_model(ModelConfig(path=model_path), trainable=False)
    with tempfile.TemporaryDirectory() as tmp:
        if found is not None:
            data = str(
                write_jsonl(Path(tmp) / "prompts.jsonl", found.generate(limit or 500, seed=0, split=split))
            )
        cfg = DataConfig(
            path=data, split=split, limit=limit, shuffle=False, max_length=1 << 20,
            system_prompt=found.system_prompt if found else None,
        )  # fmt: skip
        read = read_prompt_data(cfg)
        prompts = build_prompt_dataset(cfg, tokenizer, read=read)  # none dropped: max_length is unbounded
    settings = {"model": model_path, **asdict(sampling)}
    rollout = RolloutConfig(engine=sampling.engine, batch_size=sampling.batch_size)  # type: ignore[arg-type]
    engine = make_engine(rollout, model, tokenizer, seed=sampling.seed)
    params = SamplingParams(
        temperature=sampling.temperature, top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens
    )
    counts = {"prompts": len(prompts), "pairs": 0, "no_correct": 0, "no_incorrect": 0}
    rows: list[dict[str, Any]] = []
    with RewardRunner(specs) as runner, torch.no_grad():
        runner.check_columns(set.intersection(*(set(p.columns) for p in prompts)))
        for first in range(0, len(prompts), sampling.batch_size):
            chunk = prompts[first : first + sampling.batch_size]
            got = engine.generate([p.prompt_ids for p in chunk], sampling.n, params)
            columns = [chunk[i].columns for i in got.prompt_index]
            scored = runner.score(got.texts, [chunk[i].prompt_text for i in got.prompt_index], columns)
            by_prompt: dict[int, tuple[list[int], list[int]]] = {}
            for row, i in enumerate(got.prompt_index):
                by_prompt.setdefault(i, ([], []))[0 if scored.accuracy[row].item() == 1.0 else 1].append(row)
            for i, (good, bad) in sorted(by_prompt.items()):
                if not good or not bad:
                    counts["no_correct" if not good else "no_incorrect"] += 1
                    continue
                for c, r in list(zip(good, bad, strict=False))[: sampling.pairs_per_prompt]:
                    rows.append(
                        {
                            "prompt": read.prompts[first + i].messages,
                            "chosen": got.texts[c],
                            "rejected": got.texts[r],
                            "chosen_reward": float(scored.total[c]),
                            "rejected_reward": float(scored.total[r]),
                            **{k: v for k, v in chunk[i].columns.items() if _json_value(v)},
                            "sampling": settings,
                        }
                    )
            counts["pairs"] = len(rows)
            console.print(f"pairs: {first + len(chunk)}/{len(prompts)} prompts, {len(rows)} pairs")
    if sampling.per_step is not None:
        step_counts = cut_pairs(
            engine, tokenizer, specs, rows, read.prompts, list(prompts), sampling.per_step, params
        )
        counts.update(step_counts)
    write_jsonl(out, rows)
    return counts


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True
