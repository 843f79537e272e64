"""Policy objectives (GRPO family) and their aggregations over tokens: two registries, as verl splits them.

An objective (registry POLICY_LOSSES, `algorithm.policy_loss`) gives the per-token loss, ρ_t = exp(logp - old_logp):
- `ppo_clip`: L_t = -min(ρ_t A, clip(ρ_t, 1-eps_low, 1+eps_high) A)  (PPO / GRPO / DAPO)
- `gspo`: the same with one ratio per sequence, s = exp(mean_t log ρ_t), in its GSPO-token form (per-token A)
- `cispo`: L_t = -sg(clip(ρ_t, 1-eps_low, 1+eps_high)) A logp_t: every token keeps its gradient
- `sapo`: L_t = -A σ(τ (ρ_t - 1)) 4/τ, τ = tau_pos if A > 0 else tau_neg: a soft trust region, no hard clip
- `gpg` (= `reinforce`): L_t = -A logp_t, the plain policy gradient (ignores old_logp)
[+ β KL_t] [- entropy_coef H_t] for every objective.
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


@dataclass(frozen=True)
class ObjectiveParams:
    """The knobs of the objectives; each reads its own (eps_* by the clipped ones, tau_* by sapo)."""

    eps_low: float | None = None
    eps_high: float | None = None
    tau_pos: float = 1.0
    tau_neg: float = 1.05

    def clip(self, objective: str) -> tuple[float, float]:
        if self.eps_low is None or self.eps_high is None:
            raise ValueError(f"policy loss {objective!r} clips the ratio: it needs eps_low and eps_high")
        return self.eps_low, self.eps_high


# An objective maps (logp, old_logp, advantages [B, 1] or [B, T], mask, params) to the per-token loss [B, T]
# and detached metric SUMS over the mask (the ones it defines, e.g. clip counts); it never aggregates.
Objective = Callable[[Tensor, Tensor, Tensor, Tensor, ObjectiveParams], tuple[Tensor, dict[str, Tensor]]]
POLICY_LOSSES: Registry[Objective] = Registry("policy loss")

GSPO_MAX_LOG_RATIO = 10.0  # verl's clamp of the sequence log-ratio before exp


def _log_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    # clamp keeps exp() finite for wildly off-policy tokens (their gradient is clipped or tiny anyway)
    return (logp - old_logp.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


def _clipped_surrogate(
    ratio: Tensor, adv: Tensor, mask: Tensor, eps_low: float, eps_high: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """-min(ratio A, clip(ratio) A) and its clip counts (token sums over the mask)."""
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


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: ObjectiveParams
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_t = -min(ρ_t A, clip(ρ_t, 1-eps_low, 1+eps_high) A), ρ_t = exp(logp - old_logp) (PPO, GRPO, DAPO).

    Metrics: `clip_low` (ρ < 1-eps_low with A < 0), `clip_high` (ρ > 1+eps_high with A > 0), `clip_region`
    (either: the tokens whose gradient the clip removes), `ratio` (ρ)."""
    return _clipped_surrogate(torch.exp(_log_ratio(logp, old_logp)), adv, mask, *p.clip("ppo_clip"))


@POLICY_LOSSES.register("gspo")
def gspo(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: ObjectiveParams
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO-token (Qwen 2025): s_t = sg[s]·π(o_t)/sg[π(o_t)], s = exp((1/|o|) Σ_t m_t log ρ_t) the sequence's
    length-normalised ratio; L_t = -min(s_t A_t, clip(s_t, 1-eps_low, 1+eps_high) A_t).

    s_t equals s in value, and its gradient is s ∇logp_t: with one advantage per sequence and the per-sequence
    token mean (`seq_mean_token_mean`) this is GSPO's sequence loss -min(s A, clip(s) A) exactly, in value
    and gradient; per-token advantages are allowed. A sequence is clipped as a whole (every token of it, the
    clip counts count its tokens). Each sequence's ratio uses only its own row, so any split of the rows into
    micro-batches gives the same losses."""
    log_ratio = _log_ratio(logp, old_logp)
    seq = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    log_s = (seq.detach() + logp - logp.detach()).clamp(max=GSPO_MAX_LOG_RATIO)
    return _clipped_surrogate(torch.exp(log_s), adv, mask, *p.clip("gspo"))


@POLICY_LOSSES.register("cispo")
def cispo(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: ObjectiveParams
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax-M1): L_t = -sg(clip(ρ_t, 1-eps_low, 1+eps_high)) A logp_t; the clip bounds the
    importance weight but never removes a token's gradient (verl's convention; TRL instead caps ρ at
    epsilon_high itself). Metrics: `clip_low` / `clip_high` (ρ below / above the band, either sign of A),
    `ratio`."""
    eps_low, eps_high = p.clip("cispo")
    ratio = torch.exp(_log_ratio(logp, old_logp)).detach()
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)
    per_token = -weight * adv * logp
    with torch.no_grad():
        metrics = {
            "clip_low": ((ratio < 1 - eps_low).to(mask.dtype) * mask).sum(),
            "clip_high": ((ratio > 1 + eps_high).to(mask.dtype) * mask).sum(),
            "ratio": (ratio * mask).sum(),
        }
    return per_token, metrics


@POLICY_LOSSES.register("sapo")
def sapo(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: ObjectiveParams
) -> tuple[Tensor, dict[str, Tensor]]:
    """SAPO (soft adaptive policy optimisation): L_t = -A f(ρ_t), f(ρ) = σ(τ(ρ - 1)) 4/τ, τ = tau_pos where
    A > 0 else tau_neg. Its gradient is A w_t ∇logp_t with w = 4 ρ σ(x)(1 - σ(x)), x = τ(ρ - 1): 1 at ρ = 1
    (the policy gradient), fading smoothly as ρ leaves 1 instead of a hard clip. Metrics: `ratio` and
    `sapo_weight` (w)."""
    ratio = torch.exp(_log_ratio(logp, old_logp))
    tau = torch.where(adv > 0, p.tau_pos, p.tau_neg).to(ratio.dtype)
    gate = torch.sigmoid(tau * (ratio - 1))
    per_token = -adv * gate * (4 / tau)
    with torch.no_grad():
        weight = 4 * ratio * gate * (1 - gate)
        metrics = {"ratio": (ratio * mask).sum(), "sapo_weight": (weight * mask).sum()}
    return per_token, metrics


@POLICY_LOSSES.register("gpg")
@POLICY_LOSSES.register("reinforce")
def reinforce(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: ObjectiveParams
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_t = -A logp_t: plain REINFORCE / GPG, no ratio and no clip (old_logp only gives the logged `ratio`)."""
    with torch.no_grad():
        metrics = {"ratio": (torch.exp(_log_ratio(logp, old_logp)) * mask).sum()}
    return -adv * logp, metrics


def compute_policy_loss(
    name: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_agg: str,
    eps_low: float | None,
    eps_high: float | None,
    totals: LossTotals,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of one micro-batch: objective `name` per token [+ beta KL] [- entropy_coef H], aggregated by
    `loss_agg`; and detached metrics to log.

    logp, old_logp, ref_logp, mask, entropy: [B, T] over completion tokens; advantages: [B] (or [B, T] per
    token). eps_* are read by the clipped objectives, tau_* by sapo. Metrics are SUMS over this micro-batch's
    loss tokens plus their count `tokens`: the objective's own (see each objective), `kl` (only when a
    reference is used), `entropy` (only when the per-token `entropy` is passed). Add them up across
    micro-batches and ranks with `sum_metrics`, then divide by `tokens`.

    The entropy bonus (entropy_coef > 0) needs a differentiable `entropy` (its gradient is the bonus); with
    entropy_coef 0 the entropy is only logged. `is_weights` [B, T] (rollout correction, detached) multiply the
    objective's per-token loss, not the KL or entropy terms (as verl applies its rollout IS weights).
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
    params = ObjectiveParams(eps_low=eps_low, eps_high=eps_high, tau_pos=tau_pos, tau_neg=tau_neg)
    per_token, metrics = objective(logp, old_logp, adv, m, params)
    if is_weights is not None:
        if is_weights.shape != logp.shape:
            raise ValueError(f"is_weights {tuple(is_weights.shape)} must match logp {tuple(logp.shape)}")
        per_token = per_token * is_weights.detach().to(per_token.dtype)
    if entropy_coef > 0:
        if entropy is None or (logp.requires_grad and not entropy.requires_grad):
            raise ValueError("entropy_coef > 0 needs the per-token entropy with its gradient (not detached)")
        per_token = per_token - entropy_coef * entropy

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
