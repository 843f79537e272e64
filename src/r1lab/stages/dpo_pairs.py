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
    model_path: str | ModelConfig,
    out: Path,
    *,
    data: str | None = None,
    task: str | None = None,
    rewards: list[str] | None = None,
    limit: int | None = None,
    split: str = "train",
    sampling: PairSampling = PairSampling(),
    prompts_config: DataConfig | None = None,
    offset: int = 0,
    max_pairs: int | None = None,
    chosen: str = "verified",
) -> dict[str, int]:
    """Write the pairs to `out` (JSONL); returns the counts (prompts, pairs, no_correct, no_incorrect).

    `prompts_config` reads the prompts of `data` with a stage's data section (columns, system prompt...);
    `offset` skips the first prompts, `max_pairs` stops once that many pairs are made (counts: prompts used);
    `chosen="solution"` pairs each prompt's written solution (its `completion` column, when it verifies) with
    an incorrect sample instead of a correct sample."""
    import tempfile

    import torch

    from r1lab.models import load_model
    from r1lab.rewards import RewardRunner
    from r1lab.rollout import SamplingParams, make_engine
    from r1lab.rollout.engine_choice import check_engine_name, resolve_engine
    from r1lab.tasks import get_task

    if (task is None) == (data is None):
        raise UserError("give either --task T or --data FILE (with --reward)", where="r1lab data pairs")
    found = get_task(task) if task else None
    specs = [RewardSpec(name=r) for r in rewards or []] or ([RewardSpec(name=found.reward)] if found else [])
    if not specs:
        raise UserError("--data needs a reward to score the samples", fix="add --reward math (or another)")
    if sampling.n < 2 and chosen != "solution":  # a written solution needs only an incorrect sample
        raise UserError("--n must be at least 2 to find both a correct and an incorrect sample", where="--n")
    check_step_options(sampling.per_step)
    check_engine_name(sampling.engine, "r1lab data pairs --engine")
    model_cfg = model_path if isinstance(model_path, ModelConfig) else ModelConfig(path=model_path)
    model, tokenizer = load_model(model_cfg, trainable=False)
    with tempfile.TemporaryDirectory() as tmp:
        if found is not None:
            data = str(
                write_jsonl(Path(tmp) / "prompts.jsonl", found.generate(limit or 500, seed=0, split=split))
            )
        cfg = DataConfig(
            path=data, split=split, limit=limit, shuffle=False, max_length=1 << 20,
            system_prompt=found.system_prompt if found else None,
        )  # fmt: skip
        if prompts_config is not None:
            cfg = prompts_config.model_copy(update={"path": data, "shuffle": False, "max_length": 1 << 20})
        read = read_prompt_data(cfg)
        if offset >= len(read.prompts):
            raise UserError(
                f"offset {offset} skips every one of the {len(read.prompts)} prompts in {data}",
                where="pairs.offset",
                fix="lower the offset or give more prompts",
            )
        read.prompts = read.prompts[offset:]
        prompts = build_prompt_dataset(cfg, tokenizer, read=read)  # none dropped: max_length is unbounded
    rollout = RolloutConfig(engine=sampling.engine, batch_size=sampling.batch_size)  # type: ignore[arg-type]
    rollout = resolve_engine(rollout, model)
    settings = {"model": model_cfg.path, **asdict(sampling), "engine": rollout.engine}  # the one that ran
    engine = make_engine(rollout, model, tokenizer, seed=sampling.seed)
    params = SamplingParams(
        temperature=sampling.temperature, top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens
    )
    counts = {"prompts": len(prompts), "pairs": 0, "no_correct": 0, "no_incorrect": 0}
    rows: list[dict[str, Any]] = []
    with RewardRunner(specs) as runner, torch.no_grad():
        runner.check_columns(set.intersection(*(set(p.columns) for p in prompts)))
        for first in range(0, len(prompts), sampling.batch_size):
            if max_pairs is not None and len(rows) >= max_pairs:
                counts["prompts"] = first
                break
            chunk = prompts[first : first + sampling.batch_size]
            got = engine.generate([p.prompt_ids for p in chunk], sampling.n, params)
            columns = [chunk[i].columns for i in got.prompt_index]
            scored = runner.score(got.texts, [chunk[i].prompt_text for i in got.prompt_index], columns)
            by_prompt: dict[int, tuple[list[int], list[int]]] = {i: ([], []) for i in range(len(chunk))}
            for row, i in enumerate(got.prompt_index):
                by_prompt[i][0 if scored.accuracy[row].item() == 1.0 else 1].append(row)
            texts, rewards_of = list(got.texts), list(scored.total.tolist())
            if chosen == "solution":  # the written solutions, scored by the same reward, are the only chosen
                texts, rewards_of = _add_solutions(runner, chunk, texts, rewards_of, by_prompt)
            for i, (good, bad) in sorted(by_prompt.items()):
                if not good or not bad:
                    counts["no_correct" if not good else "no_incorrect"] += 1
                    continue
                chosen_rows = good * len(bad) if chosen == "solution" else good  # one solution, many rejected
                for c, r in list(zip(chosen_rows, bad, strict=False))[: sampling.pairs_per_prompt]:
                    rows.append(
                        {
                            "prompt": read.prompts[first + i].messages,
                            "chosen": texts[c],
                            "rejected": texts[r],
                            "chosen_reward": float(rewards_of[c]),
                            "rejected_reward": float(rewards_of[r]),
                            **{k: v for k, v in chunk[i].columns.items() if _json_value(v)},
                            "sampling": settings,
                        }
                    )
            counts["pairs"] = len(rows)
            console.print(f"pairs: {first + len(chunk)}/{len(prompts)} prompts, {len(rows)} pairs")
    if max_pairs is not None:
        rows = rows[:max_pairs]
        counts["pairs"] = len(rows)
    if sampling.per_step is not None:
        step_counts = cut_pairs(
            engine, tokenizer, specs, rows, read.prompts, list(prompts), sampling.per_step, params
        )
        counts.update(step_counts)
    write_jsonl(out, rows)
    return counts


def _add_solutions(
    runner: Any, chunk: list[Any], texts: list[str], rewards: list[float], by_prompt: dict
) -> tuple[list[str], list[float]]:
    """Append each prompt's written solution to `texts`; it becomes the prompt's only chosen when it verifies."""
    solutions = [p.columns.get("data_completion") for p in chunk]
    if any(not isinstance(s, str) for s in solutions):
        raise UserError(
            "pairs with chosen: solution need each prompt's written solution, but a prompt has none",
            where="the prompts' `completion` column",
            fix="give every prompt a `completion` (a task's train file has one), or use chosen: verified",
        )
    scored = runner.score(solutions, [p.prompt_text for p in chunk], [p.columns for p in chunk])
    for i, (good, _) in by_prompt.items():
        good[:] = [len(texts) + i] if scored.accuracy[i].item() == 1.0 else []
    return texts + solutions, rewards + scored.total.tolist()


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True
