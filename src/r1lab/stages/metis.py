"""Metis-RISE's data step (`r1lab data metis RL_STAGE_DIR --out FILE`, or a recipe stage `kind: metis`): targeted
SFT data from the per-prompt accuracy an RL stage recorded (prompt_stats.jsonl, r1lab.stages.rl_prompt_stats).

- 0 < acc < 1 (the policy sometimes solves it): its verified-correct self-sample, recorded during RL;
- acc = 0 (never solved in RL): the data's written solution (the `completion` column of prompt + completion data,
  as the built-in tasks write), since the policy has no correct sample of its own to learn from;
- acc = 1: nothing (already solved; more SFT there only costs).

Records are prompt + completion rows (what SFT reads), with `metis: {bucket, accuracy, rollouts}` saying where
each came from. A step that finds no prompt in either bucket says so and stops (an error, no file written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1lab.config import MetisConfig
from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError
from r1lab.stages.rl_prompt_stats import FILE, PromptAccuracy, read_prompt_stats
from r1lab.training.tracking import console

OUTPUT = "sft.jsonl"  # in a recipe: the file a later stage's `data: {path: METIS_STAGE}` reads


def metis_records(stats: dict[int, PromptAccuracy]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The SFT records of the two buckets (in prompt order) and the counts per bucket."""
    records: list[dict[str, Any]] = []
    counts = {"prompts": len(stats), "solved": 0, "self": 0, "written": 0, "no_solution": 0, "no_sample": 0}
    for _, acc in sorted(stats.items()):
        if acc.accuracy == 1:
            counts["solved"] += 1
            continue
        bucket, completion = ("self", acc.completion) if acc.correct else ("written", acc.solution)
        if completion is None:  # a mixed prompt's sample is always recorded; a missing one is a bad file
            counts["no_sample" if acc.correct else "no_solution"] += 1
            continue
        counts[bucket] += 1
        meta = {"bucket": bucket, "accuracy": acc.accuracy, "rollouts": acc.n}
        records.append({"prompt": acc.text, "completion": completion, "metis": meta})
    return records, counts


def build_metis_data(rl_stage: str | Path, out: str | Path) -> dict[str, int]:
    """Read `rl_stage`/prompt_stats.jsonl, write the Metis-RISE SFT records to `out`; returns the counts."""
    path = Path(rl_stage) / FILE
    if not path.is_file():
        raise UserError(
            f"no {FILE} in {rl_stage}: Metis-RISE's data step reads the per-prompt accuracy an RL stage records",
            where=str(rl_stage),
            fix="give the folder of an RL stage that has trained at least one step (its train.output_dir)",
        )
    stats = read_prompt_stats(path)
    records, counts = metis_records(stats)
    mixed = counts["self"] + counts["no_sample"]
    never = counts["written"] + counts["no_solution"]
    console.print(
        f"metis: of {counts['prompts']} prompts rolled out in RL, {counts['solved']} always solved (skipped), "
        f"{mixed} sometimes (self-samples: {counts['self']}), {never} never (written solutions: "
        f"{counts['written']}, none written: {counts['no_solution']})"
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
            f"Metis-RISE has {never} never-solved prompts but none of them has a written solution, and no prompt "
            "was solved only sometimes: no SFT record can be made",
            where=f"{path} (the training data's `completion` column)",
            fix="train RL on prompt + completion data whose `completion` column holds each written solution "
            "(the built-in tasks' files do)",
        )
    write_jsonl(out, records)
    return counts


def run_metis(cfg: MetisConfig) -> Path:
    """The recipe step: `cfg.rl_stage`'s stats into `cfg.output`/sft.jsonl (its path is the stage's output)."""
    out = Path(cfg.output) / OUTPUT
    build_metis_data(cfg.rl_stage, out)
    return out
