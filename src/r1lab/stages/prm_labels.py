"""Step labels for a process reward model by Monte-Carlo continuation (`r1lab data prm-labels`, Math-Shepherd
style: a step is good if some continuation from it still reaches the gold answer).

For each prompt, G = `--n` completions are sampled and scored by the reward; each is split into steps
(`rollout.step_values.split_steps`, separator `--step-sep`). For a sample of S steps:

- v[k] for 1 <= k < S is the share of M = `--mc` continuations of its first k steps (sampled from the same model
  with the same settings) that the reward scores correct (`rollout.step_values.prefix_success`, the estimator
  `data pairs --per-step` uses);
- v[S] is the verdict on the whole sample (1 or 0).

The hard label of step k is v[k] > 0 (Math-Shepherd's hard estimate); `values` keeps v (the soft estimate). Each
row is {prompt, steps, labels, values, correct, the prompt's columns, sampling}: training data for a
`kind: reward_model` stage with `loss: prm_bce` as it is. A sample with one step has only its verdict (counted);
a run in which no sample has two steps stops with an error naming the separator. Cost: M generations per
partial prefix of every sample.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, ModelConfig, RewardSpec, RolloutConfig
from r1lab.data import build_prompt_dataset, read_prompt_data, write_jsonl
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner
from r1lab.rollout.engine_choice import check_engine_name
from r1lab.rollout.step_values import Prefix, prefix_success, split_steps
from r1lab.rollout.types import RolloutEngine, SamplingParams
from r1lab.stages.dpo_pairs import _json_value
from r1lab.training.tracking import console

WHERE = "r1lab data prm-labels"


@dataclass(frozen=True)
class LabelOptions:
    n: int = 4  # G: completions sampled per prompt
    mc: int = 8  # M: continuations per partial step prefix
    sep: str = "\n"  # the step separator
    temperature: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16  # prompts per generate call
    seed: int = 0
    engine: str = "hf"


def check_options(opts: LabelOptions) -> None:
    """UserError for settings that cannot work (before any model loads)."""
    for key, value in (("--n", opts.n), ("--mc", opts.mc), ("--batch-size", opts.batch_size)):
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}", where=f"{WHERE} {key}", fix="e.g. 4")
    if not opts.sep:
        raise UserError("--step-sep is empty", where=f"{WHERE} --step-sep",
                        fix="give the text that ends a step, e.g. --step-sep '\\n' (the default)")  # fmt: skip
    check_engine_name(opts.engine, f"{WHERE} --engine")


def label_samples(
    engine: RolloutEngine,
    tokenizer: Any,
    rewards: RewardRunner,
    samples: list[tuple[Prefix, str, bool]],
    opts: LabelOptions,
    sampling: SamplingParams,
) -> list[dict[str, Any] | None]:
    """Per (prompt, sample text, verdict): {steps, values, labels, correct}, or None for a blank sample. All
    partial prefixes go to the engine in one batch."""
    steps = [split_steps(text, opts.sep) for _, text, _ in samples]
    todo = [(i, k) for i, parts in enumerate(steps) for k in range(1, len(parts))]
    queries = [
        Prefix(
            samples[i][0].prompt_ids, samples[i][0].prompt_text, "".join(steps[i][:k]), samples[i][0].columns
        )
        for i, k in todo
    ]
    estimates = prefix_success(engine, tokenizer, queries, opts.mc, sampling, rewards)
    values: list[list[float]] = [[] for _ in samples]
    for (i, _), v in zip(todo, estimates, strict=True):
        values[i].append(v)
    out: list[dict[str, Any] | None] = []
    for parts, v, (_, _, correct) in zip(steps, values, samples, strict=True):
        if not parts:
            out.append(None)
            continue
        v = [*v, 1.0 if correct else 0.0]
        out.append({"steps": parts, "values": v, "labels": [int(x > 0) for x in v], "correct": correct})
    return out


def make_prm_labels(
    model_path: str,
    out: Path,
    *,
    task: str | None = None,
    data: str | None = None,
    rewards: list[str] | None = None,
    limit: int | None = None,
    split: str = "train",
    opts: LabelOptions = LabelOptions(),
) -> dict[str, int]:
    """Sample, label every step and write the rows to `out` (JSONL); returns the counts."""
    import torch

    from r1lab.models import load_model
    from r1lab.rollout import make_engine
    from r1lab.rollout.engine_choice import resolve_engine
    from r1lab.tasks import get_task

    if (task is None) == (data is None):
        raise UserError("give either --task T or --data FILE (with --reward)", where=WHERE)
    found = get_task(task) if task else None
    specs = [RewardSpec(name=r) for r in rewards or []] or ([RewardSpec(name=found.reward)] if found else [])
    if not specs:
        raise UserError("--data needs a reward to score the samples", where=f"{WHERE} --reward",
                        fix="add --reward math (or another)")  # fmt: skip
    check_options(opts)
    model_cfg = ModelConfig(path=model_path)
    model, tokenizer = load_model(model_cfg, trainable=False)
    with tempfile.TemporaryDirectory() as tmp:
        if found is not None:
            rows = found.generate(limit or 500, seed=0, split=split)
            data = str(write_jsonl(Path(tmp) / "prompts.jsonl", rows))
        system = found.system_prompt if found else None
        cfg = DataConfig(path=data, split=split, limit=limit, shuffle=False, max_length=1 << 20,
                         system_prompt=system)  # fmt: skip
        read = read_prompt_data(cfg)
        prompts = list(build_prompt_dataset(cfg, tokenizer, read=read))
    rollout = RolloutConfig(engine=opts.engine, batch_size=opts.batch_size)  # type: ignore[arg-type]
    rollout = resolve_engine(rollout, model)
    engine = make_engine(rollout, model, tokenizer, seed=opts.seed)
    params = SamplingParams(temperature=opts.temperature, max_new_tokens=opts.max_new_tokens)
    settings = {"model": model_path, **asdict(opts), "engine": rollout.engine}  # the one that ran
    counts = {"prompts": len(prompts), "samples": 0, "rows": 0, "steps": 0, "good_steps": 0, "single_step": 0}
    written: list[dict[str, Any]] = []
    with RewardRunner(specs) as runner, torch.no_grad():
        runner.check_columns(set.intersection(*(set(p.columns) for p in prompts)))
        for first in range(0, len(prompts), opts.batch_size):
            chunk = prompts[first : first + opts.batch_size]
            got = engine.generate([p.prompt_ids for p in chunk], opts.n, params)
            scored = runner.score(
                got.texts,
                [chunk[i].prompt_text for i in got.prompt_index],
                [chunk[i].columns for i in got.prompt_index],
            )
            if scored.accuracy is None:
                raise UserError(f"the rewards {[s.name for s in specs]} have no correctness check to label steps "
                                "with", where=f"{WHERE} --reward", fix="add a verifier, e.g. --reward math")  # fmt: skip
            samples = [
                (Prefix(chunk[i].prompt_ids, chunk[i].prompt_text, "", chunk[i].columns), text, ok == 1.0)
                for i, text, ok in zip(got.prompt_index, got.texts, scored.accuracy.tolist(), strict=True)
            ]
            labelled = label_samples(engine, tokenizer, runner, samples, opts, params)
            counts["samples"] += len(samples)
            for i, row in zip(got.prompt_index, labelled, strict=True):
                if row is None:
                    continue
                columns = {k: v for k, v in chunk[i].columns.items() if _json_value(v)}
                written.append(
                    {"prompt": read.prompts[first + i].messages, **row, **columns, "sampling": settings}
                )
                counts["steps"] += len(row["steps"])
                counts["good_steps"] += sum(row["labels"])
                counts["single_step"] += len(row["steps"]) == 1
            console.print(f"prm-labels: {first + len(chunk)}/{len(prompts)} prompts, {len(written)} rows")
    counts["rows"] = len(written)
    if written and counts["single_step"] == len(written):
        raise UserError(
            f"no sample has more than one step with the step separator {opts.sep!r}, so there is nothing to "
            "label step by step and no file was written",
            where=f"{WHERE} --step-sep",
            fix="give the text the completions put between steps, e.g. --step-sep '\\n' (a newline, the default) "
            "or --step-sep '. '",
        )
    write_jsonl(out, written)
    return counts
