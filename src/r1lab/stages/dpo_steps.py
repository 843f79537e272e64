"""Per-step negatives for `r1lab data pairs --per-step` ("RL on Incorrect Synthetic Data", Setlur et al.):
the rejected side of a pair is the incorrect sample cut right after the first step where its chance of still
reaching a correct answer collapses.

For an incorrect sample of S steps (`rollout.step_values.split_steps`, separator `--step-sep`):

- v[k] for 0 <= k < S is estimated from M = `--mc` continuations of the first k steps (v[0]: of the prompt
  alone), sampled from the same model with the same sampling settings and scored by the same reward
  (`rollout.step_values.prefix_success`);
- v[S] = 0: the whole sample was scored incorrect.

The collapse step is the first k in 1..S-1 where the estimate falls from v[k-1] > 0 to v[k] == 0, or by
v[k-1] - v[k] >= `--collapse-drop` (default 0.5; a value above 1 leaves only the fall to zero). A zero after a
zero is no fall: where even the prompt's M continuations all fail (v[0] = 0, M too small to see the prompt's
correct samples), the scan goes on to the first step with a positive estimate. The rejected side is then the first k steps. A sample
whose partial prefixes never collapse has its error in its last step: it is written whole (cut_step = S,
collapsed: false) and counted as `no_collapse`; a one-step sample has no partial prefix to estimate and is
counted as `single_step` (also written whole, nothing estimated: step_success [null, 0]). Each row records
the number of steps, v (`step_success`), the cut step and the whole incorrect sample (`rejected_full`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner
from r1lab.rollout.step_values import Prefix, prefix_success, split_steps
from r1lab.rollout.types import RolloutEngine, SamplingParams
from r1lab.training.tracking import console

_EPS = 1e-9  # v are multiples of 1/M and 1/G: 0.6 - 0.1 must count as a drop of 0.5


@dataclass(frozen=True)
class StepOptions:
    mc: int = 8  # M: continuations per step prefix
    sep: str = "\n"  # the step separator
    drop: float = 0.5  # a fall of the success rate by at least this much from a prefix to the next


def collapse_step(values: list[float], drop: float) -> int | None:
    """The first k >= 1 with values[k-1] > 0 and (values[k] == 0 or values[k-1] - values[k] >= drop); None
    when there is none."""
    for k in range(1, len(values)):
        if values[k - 1] > _EPS and (values[k] <= _EPS or values[k - 1] - values[k] >= drop - _EPS):
            return k
    return None


def check_step_options(opts: StepOptions | None) -> None:
    """UserError for --per-step settings that cannot work (before any model loads)."""
    if opts is None:
        return
    where = "r1lab data pairs --per-step"
    if opts.mc < 1:
        raise UserError(f"--mc must be at least 1, got {opts.mc}", where=f"{where} --mc",
                        fix="give the number of continuations per step prefix, e.g. --mc 8")  # fmt: skip
    if not opts.sep:
        raise UserError("--step-sep is empty", where=f"{where} --step-sep",
                        fix="give the text that ends a step, e.g. --step-sep '\\n' (the default)")  # fmt: skip
    if opts.drop <= 0:
        raise UserError(f"--collapse-drop must be above 0, got {opts.drop}", where=f"{where} --collapse-drop",
                        fix="e.g. 0.5, or above 1 for the drop-to-zero rule only")  # fmt: skip


def cut_rows(
    engine: RolloutEngine,
    tokenizer: Any,
    rewards: RewardRunner,
    rows: list[dict[str, Any]],
    prompts: dict[str, Prefix],
    opts: StepOptions,
    sampling: SamplingParams,
) -> dict[str, int]:
    """Cut the rejected side of each pair row at its collapse step, in place (adding rejected_full, steps,
    step_success, cut_step, collapsed); `prompts` maps `prompt_key(row["prompt"])` to the prompt's Prefix.
    Returns the counts collapsed / no_collapse / single_step. Step prefixes go to the engine in one batch."""
    steps = [split_steps(row["rejected"], opts.sep) or [row["rejected"]] for row in rows]
    todo = [(r, k) for r, parts in enumerate(steps) if len(parts) > 1 for k in range(len(parts))]
    queries = []
    for r, k in todo:
        prompt = prompts[prompt_key(rows[r]["prompt"])]
        queries.append(Prefix(prompt.prompt_ids, prompt.prompt_text, "".join(steps[r][:k]), prompt.columns))
    estimates = prefix_success(engine, tokenizer, queries, opts.mc, sampling, rewards)
    values: list[list[float | None]] = [[None] for _ in rows]
    for (r, k), v in zip(todo, estimates, strict=True):
        values[r] = [v] if k == 0 else [*values[r], v]
    counts = {"collapsed": 0, "no_collapse": 0, "single_step": 0}
    for row, parts, v in zip(rows, steps, values, strict=True):
        k = collapse_step(v, opts.drop) if len(parts) > 1 else None  # type: ignore[arg-type]
        cut = len(parts) if k is None else k
        counts["collapsed" if k is not None else "no_collapse" if len(parts) > 1 else "single_step"] += 1
        row.update(
            rejected="".join(parts[:cut]), rejected_full=row["rejected"], steps=len(parts),
            step_success=[*v, 0.0], cut_step=cut, collapsed=k is not None,
        )  # fmt: skip
    return counts


def prompt_key(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages, sort_keys=True)


def cut_pairs(
    engine: RolloutEngine,
    tokenizer: Any,
    specs: list[RewardSpec],
    rows: list[dict[str, Any]],
    records: list[Any],
    examples: list[Any],
    opts: StepOptions,
    sampling: SamplingParams,
) -> dict[str, int]:
    """`cut_rows` for make_pairs: its rows, its prompt records (messages) and their tokenized examples, in
    the same order. A run where no rejected sample has two steps is an error (nothing was cut)."""
    import torch

    prompts = {
        prompt_key(r.messages): Prefix(e.prompt_ids, e.prompt_text, "", e.columns)
        for r, e in zip(records, examples, strict=True)
    }
    with RewardRunner(specs) as rewards, torch.no_grad():
        counts = cut_rows(engine, tokenizer, rewards, rows, prompts, opts, sampling)
    console.print(
        f"per-step: {counts['collapsed']} rejected samples cut at a collapse step, {counts['no_collapse']} "
        f"without one, {counts['single_step']} with a single step (M = {opts.mc} continuations per prefix)"
    )
    if rows and counts["single_step"] == len(rows):
        raise UserError(
            f"--per-step found no incorrect sample with more than one step (step separator {opts.sep!r}), "
            "so nothing could be cut and no file was written",
            where="r1lab data pairs --per-step / --step-sep",
            fix="give the separator the completions use between steps (--step-sep), or drop --per-step",
        )
    return counts
