"""How far the sampler's log-probs are from the trainer's at the same weights (an engine with its own copy of
the weights: vLLM's kernels, dtype and filtering differ from the trainer's forward).

Before a step's update the trainer's model scores the rows it is about to train on (one no-grad forward per
micro-batch); with r = pi_trainer / pi_sampler per completion token, logged each step as
`mismatch/kl` (the k3 estimate of KL(sampler || trainer), per-token mean), `mismatch/ratio_max` and
`mismatch/ratio_min` (over every trained token of every rank). Nothing is corrected here; it is the number a
TIS / MIS correction would act on.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from r1lab.algorithms.kl import k3
from r1lab.stages.rl_batch import UpdatePlan
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.training.distributed import all_reduce_sum, gather_objects


def rollout_mismatch(
    model: torch.nn.Module, plan: UpdatePlan, device: Any, temperature: float
) -> dict[str, float]:
    """The mismatch metrics of this step's rows; call it before the update (pi_old = the current weights)."""
    kl_sum, tokens = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    low, high = math.inf, -math.inf
    was_training = model.training
    model.eval()  # no dropout: the sampler ran without it
    try:
        with torch.no_grad():
            for idx in plan.micro_batches:
                if not idx:  # a rank with fewer rows than micro-batches
                    continue
                rows = plan.rows.select(idx)
                trainer = completion_logprobs(model, model, rows, device, temperature)[0].float().cpu()
                mask = rows.completion_mask.bool()
                if not mask.any():
                    continue
                sampler = rows.logprobs.float()
                kl_sum += k3(sampler[mask], trainer[mask]).double().sum()
                tokens += mask.sum()
                log_r = (trainer - sampler)[mask]
                low, high = min(low, float(log_r.min())), max(high, float(log_r.max()))
    finally:
        if was_training:
            model.train()
    sums = all_reduce_sum({"kl": kl_sum, "tokens": tokens})
    extremes = gather_objects((low, high))
    low, high = min(e[0] for e in extremes), max(e[1] for e in extremes)
    if not float(sums["tokens"]):
        return {}
    return {
        "mismatch/kl": float(sums["kl"]) / float(sums["tokens"]),
        "mismatch/ratio_max": math.exp(min(high, 50.0)),
        "mismatch/ratio_min": math.exp(max(low, -50.0)),
    }
