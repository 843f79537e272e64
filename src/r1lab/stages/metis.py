"""Metis-RISE's data step (`r1lab data metis RL_STAGE_DIR --out FILE`, or a recipe stage `kind: metis`): targeted
SFT data from the per-prompt accuracy an RL stage recorded (prompt_stats.jsonl, r1lab.stages.rl_prompt_stats).

- 0 < acc < 1 (the policy sometimes solves it): its verified-correct self-sample, recorded during RL;
- acc = 0 (never solved in RL): the data's written solution (the `completion` column of prompt + completion data,
  as the built-in tasks write), since the policy has no correct sample of its own to learn from; with a teacher,
  the teacher's first verified sample (greedy, then k at `temperature`, checked by the RL stage's own rewards),
  the written one where the teacher found none;
- acc = 1: nothing (already solved; more SFT there only costs).

Records are prompt + completion rows (what SFT reads), with `metis: {bucket, accuracy, rollouts}` saying where
each came from. A step that finds no prompt in either bucket says so and stops (an error, no file written).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1lab.config import MetisConfig
from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError
from r1lab.stages.rl_prompt_stats import FILE, PromptAccuracy, read_prompt_stats
from r1lab.training.tracking import console

OUTPUT = "sft.jsonl"  # in a recipe: the file a later stage's `data: {path: METIS_STAGE}` reads


@dataclass
class Teacher:
    """A model whose verified samples replace the written solutions of the never-solved prompts."""

    model: str
    k: int = 8  # samples per prompt, besides the greedy one
    temperature: float = 0.7
    max_new_tokens: int = 256
    batch_size: int = 8


def metis_records(
    stats: dict[int, PromptAccuracy], taught: dict[int, str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The SFT records of the two buckets (in prompt order) and the counts per bucket; `taught`: a teacher's
    verified solutions of never-solved prompts, by prompt index."""
    records: list[dict[str, Any]] = []
    buckets = ("solved", "self", "teacher", "written", "no_solution", "no_sample")
    counts = {"prompts": len(stats), **dict.fromkeys(buckets, 0)}
    for index, acc in sorted(stats.items()):
        if acc.accuracy == 1:
            counts["solved"] += 1
            continue
        bucket, completion = ("self", acc.completion) if acc.correct else ("written", acc.solution)
        if not acc.correct and index in (taught or {}):
            bucket, completion = "teacher", taught[index]
        if completion is None:  # a mixed prompt's sample is always recorded; a missing one is a bad file
            counts["no_sample" if acc.correct else "no_solution"] += 1
            continue
        counts[bucket] += 1
        meta = {"bucket": bucket, "accuracy": acc.accuracy, "rollouts": acc.n}
        records.append({"prompt": acc.text, "completion": completion, "metis": meta})
    return records, counts


def build_metis_data(rl_stage: str | Path, out: str | Path, teacher: Teacher | None = None) -> dict[str, int]:
    """Read `rl_stage`/prompt_stats.jsonl, write the Metis-RISE SFT records to `out`; returns the counts."""
    path = Path(rl_stage) / FILE
    if not path.is_file():
        raise UserError(
            f"no {FILE} in {rl_stage}: Metis-RISE's data step reads the per-prompt accuracy an RL stage records",
            where=str(rl_stage),
            fix="give the folder of an RL stage that has trained at least one step (its train.output_dir)",
        )
    stats = read_prompt_stats(path)
    never_solved = [i for i, acc in sorted(stats.items()) if acc.correct == 0]
    taught = (
        teacher_solutions(Path(rl_stage), stats, never_solved, teacher) if teacher and never_solved else None
    )
    records, counts = metis_records(stats, taught)
    mixed = counts["self"] + counts["no_sample"]
    never = counts["teacher"] + counts["written"] + counts["no_solution"]
    console.print(
        f"metis: of {counts['prompts']} prompts rolled out in RL, {counts['solved']} always solved (skipped), "
        f"{mixed} sometimes (self-samples: {counts['self']}), {never} never (teacher: {counts['teacher']}, "
        f"written solutions: {counts['written']}, none: {counts['no_solution']})"
    )
    if not mixed and not never:
        raise UserError(
            f"Metis-RISE found no prompt in either bucket: all {counts['prompts']} prompts of {path} were solved "
            "in every rollout (acc = 1), so there is nothing to fine-tune on",
            where=str(path),
            fix="skip the SFT stage, or run RL on harder prompts (e.g. more numbers in the task)",
        )
    if not records:
        raise UserError(
            f"Metis-RISE has {never} never-solved prompts but none of them has a written (or teacher's) solution, "
            "and no prompt was solved only sometimes: no SFT record can be made",
            where=f"{path} (the training data's `completion` column)",
            fix="train RL on prompt + completion data whose `completion` column holds each written solution "
            "(the built-in tasks' files do), or give a teacher whose samples verify",
        )
    write_jsonl(out, records)
    return counts


def teacher_solutions(
    rl_stage: Path, stats: dict[int, PromptAccuracy], indices: list[int], teacher: Teacher
) -> dict[int, str]:
    """The teacher's first verified completion (its greedy one, else one of k samples) of each prompt in
    `indices`, prompted as the RL stage prompted (its data.system_prompt) and verified by the stage's rewards."""
    from r1lab.config import EvalConfig, ModelConfig, RLConfig, load_config
    from r1lab.data import PromptExample, tokenize_prompt
    from r1lab.eval.runner import generate_and_score
    from r1lab.models import load_model
    from r1lab.rewards import RewardRunner

    cfg = load_config(RLConfig, rl_stage / "config.yaml")  # the resolved config every RL stage writes
    system = [{"role": "system", "content": cfg.data.system_prompt}] if cfg.data.system_prompt else []
    model, tokenizer = load_model(ModelConfig(path=teacher.model), trainable=False)
    prompts = [
        PromptExample(tokenize_prompt(tokenizer, [*system, {"role": "user", "content": stats[i].text}]),
                      stats[i].text, stats[i].columns or {})
        for i in indices
    ]  # fmt: skip
    eval_cfg = EvalConfig(
        data=str(rl_stage), n=teacher.k, k=[1], temperature=teacher.temperature,
        max_new_tokens=teacher.max_new_tokens, batch_size=teacher.batch_size,
    )  # fmt: skip
    with RewardRunner(cfg.rewards) as rewards:
        rewards.check_columns(set.intersection(*(set(p.columns) for p in prompts)))
        rows = generate_and_score(model, tokenizer, prompts, eval_cfg, rewards)
    found: dict[int, str] = {}
    for row in sorted(rows, key=lambda r: r["kind"] != "greedy"):  # the greedy one first, then the samples
        if row["correct"]:
            found.setdefault(indices[row["problem"]], row["completion"])
    return found


def run_metis(cfg: MetisConfig) -> Path:
    """The recipe step: `cfg.rl_stage`'s stats into `cfg.output`/sft.jsonl (its path is the stage's output)."""
    out = Path(cfg.output) / OUTPUT
    teacher = None
    if cfg.teacher is not None:
        teacher = Teacher(cfg.teacher, cfg.k, cfg.temperature, cfg.max_new_tokens, cfg.batch_size)
    build_metis_data(cfg.rl_stage, out, teacher)
    return out
