"""Rollout correction: importance weights for completions sampled by a policy that is not the one the trainer
updates (vLLM's kernels and dtype, or the stale weights of an asynchronous rollout).

With rho_t = exp(logp_trainer_t - logp_sampler_t), logp_trainer the trainer's log-probs at the weights the
update starts from (pi_old, recomputed) and logp_sampler the sampler's, this is verl's decoupled mode: the
objective's ratio is pi_theta / pi_old and each token's objective is multiplied by a stop-gradient weight w_t
correcting pi_old against the sampler. Modes (registry ROLLOUT_CORRECTIONS) by level:

- `tis` (truncated IS), `token`: w_t = min(rho_t, C); `sequence`: w = min(prod_t rho_t, C) on every token of
  the row (the product of the token ratios, verl's "sequence" IS)
- `mis` (masked IS), `token`: w_t = rho_t if lower <= rho_t <= upper else 0 (IcePop); `sequence`: w =
  prod_t rho_t if it lies in [lower, upper] else 0; `geometric`: w = 1 if the geometric mean
  exp(mean_t log rho_t) lies in [lower, upper] else 0 (verl's Geo-RS: the length-normalised ratio is a filter,
  not an importance weight, so it has no TIS form)

Log-ratios are clamped to +-20 before exp (verl's SAFETY_BOUND). A masked token keeps its place in the loss
normaliser with weight 0, as verl's IcePop weights do (verl's rejection filters drop it from the mask instead).
Every weight depends on its own row only, so any split of the rows into micro-batches gives the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from r1lab.registry import Registry

SAFETY_BOUND = 20.0  # verl's clamp of a log-ratio before exp: exp(20) ~ 4.9e8
LEVELS = ("token", "sequence", "geometric")

# (row-level log-ratio [B, T], lower, upper) -> (weights [B, T], affected [B, T] bool: truncated or masked)
Rule = Callable[[Tensor, float | None, float], tuple[Tensor, Tensor]]
ROLLOUT_CORRECTIONS: Registry[Rule] = Registry("rollout correction")


def level_log_ratio(log_ratio: Tensor, mask: Tensor, level: str) -> Tensor:
    """The log-ratio each token's weight is taken from, [B, T]: its own (`token`), its row's sum (`sequence`:
    the log of the product of the token ratios) or its row's mean (`geometric`), over the mask."""
    if level == "token":
        return log_ratio
    m = mask.to(log_ratio.dtype)
    total = (log_ratio * m).sum(-1, keepdim=True)
    if level == "sequence":
        return total.expand_as(log_ratio)
    if level == "geometric":
        return (total / m.sum(-1, keepdim=True).clamp(min=1)).expand_as(log_ratio)
    raise ValueError(f"unknown rollout correction level {level!r}: use one of {', '.join(LEVELS)}")


@ROLLOUT_CORRECTIONS.register("tis")
def truncated_is(log_ratio: Tensor, lower: float | None, upper: float) -> tuple[Tensor, Tensor]:
    """w = min(rho, upper); affected: rho > upper (truncated)."""
    if lower is not None:
        raise ValueError("truncated IS has no lower bound (it only caps the weight): leave lower unset")
    rho = torch.exp(log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND))
    return rho.clamp(max=upper), rho > upper


@ROLLOUT_CORRECTIONS.register("mis")
def masked_is(log_ratio: Tensor, lower: float | None, upper: float) -> tuple[Tensor, Tensor]:
    """w = rho where lower <= rho <= upper, else 0; affected: the masked ones."""
    if lower is None:
        raise ValueError("masked IS needs a lower bound as well as an upper one")
    rho = torch.exp(log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND))
    keep = (rho >= lower) & (rho <= upper)
    return torch.where(keep, rho, torch.zeros_like(rho)), ~keep


def rollout_is_weights(
    trainer_logp: Tensor,
    sampler_logp: Tensor,
    mask: Tensor,
    *,
    mode: str,
    level: str,
    upper: float,
    lower: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Detached importance weights [B, T] (0 off the mask) and the tokens whose weight was truncated or
    masked ([B, T] bool, False off the mask), from the trainer's and the sampler's log-probs of the sampled
    tokens (both [B, T])."""
    if trainer_logp.shape != sampler_logp.shape or trainer_logp.shape != mask.shape:
        raise ValueError(
            f"trainer_logp {tuple(trainer_logp.shape)}, sampler_logp {tuple(sampler_logp.shape)} and mask "
            f"{tuple(mask.shape)} must match"
        )
    if upper <= 0 or (lower is not None and not 0 < lower <= upper):
        raise ValueError(f"the bounds must satisfy 0 < lower <= upper, got lower={lower}, upper={upper}")
    if mode == "tis" and level == "geometric":
        raise ValueError("the geometric mean of the ratios is a filter, not an importance weight: use mis")
    rule = ROLLOUT_CORRECTIONS.get(mode)
    on = mask.bool()
    log_ratio = (trainer_logp.detach().float() - sampler_logp.detach().float()).masked_fill(~on, 0.0)
    weights, affected = rule(level_log_ratio(log_ratio, on, level), lower, upper)
    if level == "geometric":  # a filter: kept rows get weight 1
        weights = (~affected).to(weights.dtype)
    return weights * on, affected & on
