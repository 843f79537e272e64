"""`r1lab doctor` on an SFT stage: the stage's own loading path (data read before the model loads, the same
UserErrors), then the template masks, data statistics, the accumulation check with the stage's loss, one step's
cost, and the eval/train overlap."""

from __future__ import annotations

import functools
import statistics

import torch

from r1lab.algorithms.sft_losses import IGNORE_INDEX, SFT_LOSSES
from r1lab.config import OTRConfig, SFTConfig
from r1lab.data import build_sft_dataset, collate, read_sft_data
from r1lab.doctor.checks import Check, accumulation_check, overlap_check, step_check, template_check
from r1lab.models import load_model
from r1lab.stages.sft import _forward_loss, _shifted_targets
from r1lab.training.accel import build_accelerator, seed_everything

TEMPLATE_EXAMPLES = 32  # conversations whose trained turns are checked for a stop token


def sft_checks(cfg: SFTConfig, eval_path: str | None) -> list[Check]:
    seed_everything(cfg.train.seed)
    read = read_sft_data(cfg.data, seed=cfg.train.seed)  # as the stage: a data mistake before the model loads
    model, tokenizer = load_model(cfg.model, trainable=True)
    dataset = build_sft_dataset(cfg.data, tokenizer, read=read)
    accelerator, precision = build_accelerator(cfg.train, cfg.model)
    model = accelerator.prepare(model)
    checks = [
        template_check(
            tokenizer,
            accelerator.unwrap_model(model),
            [(c.messages, c.first_target) for _, c in read.conversations[:TEMPLATE_EXAMPLES]],
            read.source,
        ),
        data_check(
            dataset.stats, [len(ex["input_ids"]) for ex in dataset], cfg.data.max_length, cfg.data.overlong
        ),
    ]
    loss_fn = SFT_LOSSES.get(cfg.loss)
    if cfg.loss == "otr":  # the stage's knobs
        o = cfg.otr or OTRConfig()
        knobs = {"k": o.k, "temperature": o.temperature, "negative_reward": o.negative_reward}
        loss_fn = functools.partial(loss_fn, **knobs, nll_weight=o.nll_weight)
    pad_id = tokenizer.pad_token_id

    def batch(rows: list[int]) -> dict[str, torch.Tensor]:
        return collate(
            [dataset[i] for i in rows], pad_id, packing=cfg.packing, max_length=cfg.data.max_length
        )

    def tokens(rows: list[int]) -> float:
        return float((_shifted_targets(batch(rows)) != IGNORE_INDEX).sum())

    def loss(rows: list[int], total: float) -> torch.Tensor:
        b = batch(rows)
        return _forward_loss(model, b, _shifted_targets(b), loss_fn, accelerator.device) / total

    k = max(1, min(cfg.train.batch_size, 4))
    checks.append(accumulation_check(loss, tokens, model, list(range(min(2 * k, len(dataset)))), precision))
    longest = sorted(range(len(dataset)), key=lambda i: -len(dataset[i]["input_ids"]))[: cfg.train.batch_size]

    def micro() -> None:
        rows = longest
        loss(rows, tokens(rows)).backward()
        model.zero_grad(set_to_none=True)

    checks.append(step_check(micro, model, cfg.train.grad_accum))
    checks.append(overlap_check(cfg.data, eval_path or cfg.data.eval_path, cfg.data.columns))
    return checks


def data_check(stats: dict[str, int], lengths: list[int], max_length: int, overlong: str) -> Check:
    """Lengths of the kept examples and what max_length did (truncated or dropped, as data.overlong says)."""
    q = statistics.quantiles(lengths, n=20) if len(lengths) > 1 else lengths * 19
    summary = (
        f"{stats['kept']} of {stats['total']} examples kept; tokens min {min(lengths)}, median "
        f"{int(statistics.median(lengths))}, p95 {int(q[-1])}, max {max(lengths)} (max_length {max_length})"
    )
    counts = {k: v for k, v in stats.items() if k in ("truncated", "dropped", "skipped_no_assistant") and v}
    details = [", ".join(f"{k}: {v}" for k, v in stats.items())]
    cut = stats.get("truncated", 0) + stats.get("dropped", 0)
    if cut:
        share = cut / max(stats["total"], 1)
        return Check(
            "data",
            "warn",
            f"{summary}; {cut} ({share:.1%}) longer than max_length were {'dropped' if overlong == 'drop' else 'cut'}",
            details,
            "raise data.max_length if those examples matter",
        )
    return Check("data", "ok", summary + (f"; {counts}" if counts else ""), details)
