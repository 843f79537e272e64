"""Policy objectives (GRPO family) and their aggregations over tokens: two registries, as verl splits them.

An objective (registry POLICY_LOSSES, `algorithm.policy_loss`) gives the per-token loss; today `ppo_clip`:
ρ_t = exp(logp - old_logp),  L_t = -min(ρ_t A, clip(ρ_t, 1-eps_low, 1+eps_high) A)  [+ β KL_t].
`old_logp` is the policy that generated the batch (the rollout log-probs); with μ > 1 updates per generation
the same `old_logp` is kept for every update, so ρ moves away from 1 and the clip takes effect.
With μ = 1, ρ ≡ 1: the loss value is ~0 but its gradient is -A ∇logp (log reward, not loss).

An aggregation (registry LOSS_AGGS, `algorithm.loss_agg`) turns per-token losses of ONE micro-batch into a
scalar, normalised by `LossTotals` counted over the WHOLE generation batch (all micro-batches, all ranks).
Summing the micro-batch losses (gradient accumulation) then gives exactly the full-batch loss and gradient.
Normalising by per-micro-batch counts instead changes the scale with the accumulation split (TRL #5619).

Under DDP, gradients are AVERAGED over ranks: with global totals, multiply each rank's loss by world_size
(or pass totals divided by world_size) to keep the full-batch scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from r1lab.algorithms.kl import MAX_LOG_RATIO, kl_penalty
from r1lab.registry import Registry


@dataclass(frozen=True)
class LossTotals:
    """Counts over the whole generation batch (all micro-batches and ranks) that normalise the loss.

    tokens: Σ of the loss mask; sequences: completions with at least one loss token (a completion masked
    out entirely, e.g. by `mask_truncated`, counts as dropped); max_completion_length: the generation budget
    (rollout.max_new_tokens), the constant denominator of Dr. GRPO.
    """

    tokens: float
    sequences: float
    max_completion_length: int

    @classmethod
    def from_mask(cls, mask: Tensor, max_completion_length: int | None = None) -> LossTotals:
        """Totals of one process's full generation batch; all-reduce tokens and sequences across ranks."""
        per_seq = mask.float().sum(-1)
        return cls(
            tokens=float(per_seq.sum()),
            sequences=float((per_seq > 0).sum()),
            max_completion_length=int(max_completion_length or mask.shape[-1]),
        )


Aggregation = Callable[[Tensor, Tensor, LossTotals], Tensor]
LOSS_AGGS: Registry[Aggregation] = Registry("loss aggregation")


@LOSS_AGGS.register("seq_mean_token_mean")
def seq_mean_token_mean(per_token: Tensor, mask: Tensor, totals: LossTotals) -> Tensor:
    """Mean over sequences of the per-sequence token mean (DeepSeekMath GRPO): Σ_seq (Σ_t L m / Σ_t m) / S."""
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / max(totals.sequences, 1.0)


@LOSS_AGGS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(per_token: Tensor, mask: Tensor, totals: LossTotals) -> Tensor:
    """Σ L m / (sequences × max_completion_length): a constant normaliser, no length bias (Dr. GRPO)."""
    return (per_token * mask).sum() / max(totals.sequences * totals.max_completion_length, 1.0)


@LOSS_AGGS.register("token_mean")
def token_mean(per_token: Tensor, mask: Tensor, totals: LossTotals) -> Tensor:
    """Token-level mean over the whole generation batch: Σ L m / Σ m (DAPO)."""
    return (per_token * mask).sum() / max(totals.tokens, 1.0)


# An objective maps (logp, old_logp, advantages [B, 1] or [B, T], mask) to the per-token loss [B, T] and
# detached metric SUMS over the mask (the ones it defines, e.g. clip counts); it never aggregates.
Objective = Callable[..., tuple[Tensor, dict[str, Tensor]]]
POLICY_LOSSES: Registry[Objective] = Registry("policy loss")


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, eps_low: float, eps_high: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_t = -min(ρ_t A, clip(ρ_t, 1-eps_low, 1+eps_high) A), ρ_t = exp(logp - old_logp) (PPO, GRPO, DAPO)."""
    # clamp keeps exp() finite for wildly off-policy tokens (their gradient is clipped or tiny anyway)
    log_ratio = (logp - old_logp.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    with torch.no_grad():
        low = ((ratio < 1 - eps_low) & (adv < 0)).to(mask.dtype) * mask
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(mask.dtype) * mask
        metrics = {
            "clip_low": low.sum(),
            "clip_high": high.sum(),
            "clip_region": (low + high).sum(),
            "ratio": (ratio * mask).sum(),
        }
    return per_token, metrics


def compute_policy_loss(
    name: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_agg: str,
    eps_low: float,
    eps_high: float,
    totals: LossTotals,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of one micro-batch: objective `name` per token [+ beta KL], aggregated by `loss_agg`; and detached
    metrics to log.

    logp, old_logp, ref_logp, mask: [B, T] over completion tokens; advantages: [B] (or [B, T] per token).
    Metrics are SUMS over this micro-batch's loss tokens plus their count `tokens`: the objective's own (for
    ppo_clip: `clip_low` (ρ < 1-eps_low with A < 0), `clip_high` (ρ > 1+eps_high with A > 0), `clip_region`
    (either; the tokens whose gradient the clip removes), `ratio` (ρ)), `kl` (only when a reference is used),
    `entropy` (only when the per-token `entropy` [B, T] is passed; it is logged, not part of the loss). Add
    them up across micro-batches and ranks with `sum_metrics`, then divide by `tokens`.
    """
    objective = POLICY_LOSSES.get(name)
    aggregate = LOSS_AGGS.get(loss_agg)
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask {tuple(mask.shape)} must match"
        )
    m = mask.to(logp.dtype)
    adv = advantages.detach().to(logp.dtype)
    adv = adv.unsqueeze(-1) if adv.dim() == 1 else adv
    per_token, metrics = objective(logp, old_logp, adv, m, eps_low=eps_low, eps_high=eps_high)

    if ref_logp is not None and beta > 0:
        kl = kl_penalty(logp, ref_logp, kl_estimator)
        per_token = per_token + beta * kl
        metrics["kl"] = (kl.detach() * m).sum()

    loss = aggregate(per_token, m, totals)
    metrics["tokens"] = m.sum().detach()
    if entropy is not None:
        metrics["entropy"] = (entropy.detach() * m).sum()
    return loss, metrics


def sum_metrics(parts: Iterable[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Add up the metric sums of several micro-batches (then all-reduce with op=sum across ranks if needed)."""
    total: dict[str, Tensor] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total[key] + value if key in total else value.detach().clone()
    return total


def mask_truncated_completions(mask: Tensor, finish_reasons: list[str]) -> Tensor:
    """Zero the loss mask of completions cut at the length limit (finish reason "length"), DAPO-style."""
    if len(finish_reasons) != mask.shape[0]:
        raise ValueError(f"{len(finish_reasons)} finish reasons for {mask.shape[0]} completions")
    keep = torch.tensor([reason != "length" for reason in finish_reasons], device=mask.device)
    return mask * keep.unsqueeze(-1).to(mask.dtype)
