"""RIF-RFT's filter before RL (`pass_rate_filter: {k, drop}`): the initial policy samples k completions per
training prompt (the eval runner at rollout.temperature and rollout.max_new_tokens, plus its greedy one), the run's
accuracy reward verifies them, and the prompts it never solves (drop: never, the paper's rule), always solves
(always) or both are dropped before the first step. The pass rates are those of `r1lab data select --method
pass_rate` (r1lab.eval.pass_rate, one implementation).

Written to the stage folder: `pass_rates.jsonl` (per prompt, in dataset order: prompt, pass_rate, greedy_correct,
kept) and `pass_rate_filter.json` (k, drop, the counts). A resumed run reads its pass rates back instead of
sampling again, so it trains on the same prompts in the same order. Every prompt dropped is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from r1lab.config import EvalConfig, RLConfig
from r1lab.data.jsonl import write_jsonl
from r1lab.data.prompts import PromptDataset
from r1lab.errors import UserError
from r1lab.eval.pass_rate import kept_by_pass_rate, pass_rate_counts, pass_rates
from r1lab.eval.runner import generate_and_score
from r1lab.training.tracking import console

RATES, SUMMARY = "pass_rates.jsonl", "pass_rate_filter.json"


def filter_prompts(
    cfg: RLConfig, prompts: PromptDataset, model: Any, tokenizer: Any, runner: Any, out: Path, accelerator: Any,
    *, resumed: bool,
) -> PromptDataset:  # fmt: skip
    """`prompts` without the ones `cfg.pass_rate_filter` drops (unchanged without one)."""
    spec = cfg.pass_rate_filter
    if spec is None:
        return prompts
    rates = _read_rates(out, len(prompts)) if resumed else None
    if rates is None:
        rates = _measure(cfg, prompts, model.to(accelerator.device), tokenizer, runner, accelerator)
    keep = kept_by_pass_rate(rates, spec.drop)
    counts = pass_rate_counts(rates)
    summary = {"k": spec.k, "drop": spec.drop, **counts, "kept": len(keep), "dropped": len(rates) - len(keep)}
    console.print(
        f"pass_rate_filter: of {len(rates)} prompts {counts['never']} never solved, {counts['mixed']} sometimes, "
        f"{counts['always']} always (k = {spec.k}); drop {spec.drop}: {len(keep)} kept"
    )
    if not keep:
        raise UserError(
            f"pass_rate_filter (drop: {spec.drop}) dropped every one of the {len(rates)} training prompts: "
            f"{counts['never']} never solved and {counts['always']} always solved in {spec.k} samples each",
            where=f"pass_rate_filter / data.path = {cfg.data.path}",
            fix="start from a stronger model (an SFT stage first), raise pass_rate_filter.k or "
            "rollout.max_new_tokens, use easier prompts, or drop fewer (drop: never)",
        )
    if accelerator.is_main_process:
        kept = set(keep)
        pairs = enumerate(zip(prompts, rates, strict=True))
        write_jsonl(
            out / RATES, [{"prompt": p.prompt_text, "pass_rate": r, "kept": i in kept} for i, (p, r) in pairs]
        )
        (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    stats = {**prompts.stats, "kept": len(keep), "pass_rate_dropped": len(rates) - len(keep)}
    return PromptDataset([prompts[i] for i in keep], stats, prompts.eval)


@torch.no_grad()
def _measure(
    cfg: RLConfig, prompts: PromptDataset, model: Any, tokenizer: Any, runner: Any, accelerator: Any
) -> list[float]:
    """Pass rates of the initial policy, measured by the main process and shared with the others (the same kept
    prompts on every rank, whatever the ranks' sampling numerics)."""
    rates: list[float] = []
    if accelerator.is_main_process:
        was_training = model.training
        model.eval()
        eval_cfg = EvalConfig(
            data=cfg.data.path, n=cfg.pass_rate_filter.k, k=[1], temperature=cfg.rollout.temperature,
            max_new_tokens=cfg.rollout.max_new_tokens, batch_size=cfg.rollout.batch_size or cfg.prompts_per_step,
        )  # fmt: skip
        rows = generate_and_score(model, tokenizer, list(prompts), eval_cfg, runner)
        rates = pass_rates(rows, len(prompts))[0]
        model.train(was_training)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        rates = broadcast_object_list([rates])[0]
    return rates


def _read_rates(out: Path, n_prompts: int) -> list[float] | None:
    """The pass rates an earlier (interrupted) run of this stage wrote; None when it wrote none."""
    path = out / RATES
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(rows) != n_prompts:
        raise UserError(
            f"{path} holds pass rates for {len(rows)} prompts, but the training data has {n_prompts} now",
            where=str(path),
            fix="resume with the data the run started with, or start the stage afresh in a new folder",
        )
    return [float(r["pass_rate"]) for r in rows]
