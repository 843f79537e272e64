"""How far the sampler's log-probs are from the trainer's, and the correction for it (an engine with its own
copy of the weights: vLLM's kernels, dtype and filtering differ from the trainer's forward; or the stale
weights of rollout.async).

Before a step's update the trainer's model scores the rows it is about to train on (one no-grad forward per
micro-batch, eval mode); with r = pi_trainer / pi_sampler per completion token, logged each step as
`mismatch/kl` (the k3 estimate of KL(sampler || trainer), per-token mean), `mismatch/ratio_max` and
`mismatch/ratio_min` (over every trained token of every rank).

With `algorithm.rollout_correction` (`off_policy_plan`) those log-probs become pi_old (verl's decoupled
mode: the objective's ratio is pi_theta / pi_old, the trainer's own), and each token's objective is multiplied
by the importance weight of r (r1lab.algorithms.rollout_correction), fixed for the step's `mu` updates. Logged
as well: `mismatch/weight_mean` (mean weight over the trained tokens) and `mismatch/clipped_fraction` (tis:
tokens whose weight was truncated) or `mismatch/masked_fraction` (mis: tokens whose weight was zeroed).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from r1lab.algorithms.kl import k3
from r1lab.algorithms.rollout_correction import rollout_is_weights
from r1lab.config import RolloutCorrectionConfig
from r1lab.stages.rl_batch import UpdatePlan
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.training.distributed import all_reduce_sum, gather_objects


def trainer_logprobs(model: torch.nn.Module, plan: UpdatePlan, device: Any, temperature: float) -> Tensor:
    """The trainer's log-probs of `plan.rows` (float32 [n, T] on the CPU, 0 off the mask) at its current
    weights, without dropout (the sampler ran without it); the model's train/eval mode is kept."""
    rows = plan.rows
    out = torch.zeros(rows.completion_mask.shape, dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in plan.micro_batches:
                if not idx:  # a rank with fewer rows than micro-batches
                    continue
                logp = completion_logprobs(model, model, rows.select(idx), device, temperature)[0]
                out[idx, : logp.shape[1]] = logp.float().cpu()
    finally:
        model.train(was_training)
    return out


def mismatch_metrics(
    trainer: Tensor, plan: UpdatePlan, weights: Tensor | None = None, affected: Tensor | None = None
) -> dict[str, float]:
    """`mismatch/*` over the trained tokens of every rank (a collective: call it on every rank); the weight
    statistics only when `weights` (and `affected`, the truncated or masked tokens) are given."""
    rows = [i for idx in plan.micro_batches for i in idx]
    mask = torch.zeros(plan.rows.completion_mask.shape, dtype=torch.bool)
    mask[rows] = plan.rows.loss_mask[rows].bool()  # the trained tokens (not an episode's tool results)
    sampler = plan.rows.logprobs.float()
    log_r = (trainer - sampler)[mask]
    sums = {"kl": k3(sampler[mask], trainer[mask]).double().sum(), "tokens": mask.sum().double()}
    if weights is not None and affected is not None:
        sums |= {"weight": weights[mask].double().sum(), "affected": affected[mask].double().sum()}
    sums = all_reduce_sum(sums)
    extremes = gather_objects(
        (float(log_r.min()), float(log_r.max())) if log_r.numel() else (math.inf, -math.inf)
    )
    low, high = min(e[0] for e in extremes), max(e[1] for e in extremes)
    tokens = float(sums["tokens"])
    if not tokens:
        return {}
    out = {
        "mismatch/kl": float(sums["kl"]) / tokens,
        "mismatch/ratio_max": math.exp(min(high, 50.0)),
        "mismatch/ratio_min": math.exp(max(low, -50.0)),
    }
    if "weight" in sums:
        out["mismatch/weight_mean"] = float(sums["weight"]) / tokens
    return out | ({"mismatch/affected": float(sums["affected"]) / tokens} if "affected" in sums else {})


def rollout_mismatch(
    model: torch.nn.Module, plan: UpdatePlan, device: Any, temperature: float
) -> dict[str, float]:
    """The mismatch metrics of this step's rows, nothing corrected; call it before the update."""
    return mismatch_metrics(trainer_logprobs(model, plan, device, temperature), plan)


def off_policy_plan(
    model: torch.nn.Module,
    plan: UpdatePlan,
    device: Any,
    temperature: float,
    correction: RolloutCorrectionConfig | None = None,
) -> tuple[UpdatePlan, dict[str, float]]:
    """The plan with pi_old = the trainer's recomputed log-probs (call it before the update) and, with
    `correction`, the importance weights of the sampler's rows; and the step's `mismatch/*` metrics."""
    trainer = trainer_logprobs(model, plan, device, temperature)
    new = replace(plan, rows=replace(plan.rows, logprobs=trainer))
    if correction is None:
        return new, mismatch_metrics(trainer, plan)
    lower, upper = correction.bounds()
    weights, affected = rollout_is_weights(
        trainer,
        plan.rows.logprobs,
        plan.rows.loss_mask,
        mode=correction.mode,
        level=correction.level,
        upper=upper,
        lower=lower,
    )
    metrics = mismatch_metrics(trainer, plan, weights, affected)
    if "mismatch/affected" in metrics:
        name = "clipped_fraction" if correction.mode == "tis" else "masked_fraction"
        metrics[f"mismatch/{name}"] = metrics.pop("mismatch/affected")
    return replace(new, is_weights=weights), metrics
