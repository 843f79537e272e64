"""Advantage estimators for group-sampled RL (GRPO family): name -> fn(rewards, group_ids, lengths) -> advantages.

Every estimator takes `rewards: Tensor[N]` (one scalar per completion; NaN where no reward function gave a
score) and `group_ids: LongTensor[N]` (completions of the same prompt share an id; any integer values, groups
may have unequal sizes, e.g. after dynamic-sampling filters), and optionally `lengths: Tensor[N]`, each
completion's loss tokens: the REINFORCE++ estimators whiten over tokens (a completion counts as many times as
it has tokens; without lengths, once each); the group estimators ignore it. All work is vectorised with
`index_add_`.

NaN rewards are left out of every statistic and get advantage 0, so they give no gradient.
A group with a single valid reward has std 0 and advantage 0 (nothing to compare against).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from r1lab.registry import Registry

AdvantageFn = Callable[..., Tensor]  # (rewards, group_ids, lengths=None) -> advantages [N]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")

GRPO_EPS = 1e-4  # added to the std; TRL uses the same value
WHITEN_EPS = 1e-8  # REINFORCE++: (x - mean) / sqrt(var + 1e-8), as verl's masked_whiten


@dataclass(frozen=True)
class _GroupStats:
    """Per-row view of its group's statistics (float64), computed over valid (non-NaN) rewards only."""

    rewards: Tensor  # NaN replaced by 0
    valid: Tensor  # bool [N]
    count: Tensor  # valid rewards in the row's group
    mean: Tensor
    std: Tensor  # Bessel-corrected; 0 for groups with < 2 valid rewards


def _check(rewards: Tensor, group_ids: Tensor) -> None:
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must be 1-D of equal length, got {tuple(rewards.shape)} "
            f"and {tuple(group_ids.shape)}"
        )


def _group_stats(rewards: Tensor, group_ids: Tensor) -> _GroupStats:
    _check(rewards, group_ids)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    valid = ~torch.isnan(rewards)
    r = torch.where(valid, rewards.double(), 0.0)
    zeros = torch.zeros(n_groups, dtype=torch.float64, device=rewards.device)
    count = zeros.index_add(0, inverse, valid.double())
    mean = zeros.index_add(0, inverse, r) / count.clamp(min=1)
    dev = torch.where(valid, r - mean[inverse], 0.0)
    var = zeros.index_add(0, inverse, dev * dev) / (count - 1).clamp(min=1)
    return _GroupStats(r, valid, count[inverse], mean[inverse], var.sqrt()[inverse])


def _finish(adv: Tensor, stats: _GroupStats, like: Tensor) -> Tensor:
    adv = torch.where(stats.valid, adv, 0.0)
    return adv.to(like.dtype if like.is_floating_point() else torch.float32)


@ADVANTAGES.register("grpo")
def grpo(rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """A_i = (r_i - mean_g) / (std_g + 1e-4), std with Bessel's correction (DeepSeekMath GRPO)."""
    s = _group_stats(rewards, group_ids)
    return _finish((s.rewards - s.mean) / (s.std + GRPO_EPS), s, rewards)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """A_i = r_i - mean_g: no std division, which Dr. GRPO shows biases toward easy/hard prompts."""
    s = _group_stats(rewards, group_ids)
    return _finish(s.rewards - s.mean, s, rewards)


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """A_i = r_i - mean of the other G-1 valid rewards of the group = G/(G-1) (r_i - mean_g); 0 when G = 1."""
    s = _group_stats(rewards, group_ids)
    adv = (s.rewards - s.mean) * s.count / (s.count - 1).clamp(min=1)
    return _finish(adv, s, rewards)


@ADVANTAGES.register("batch_std")
def batch_std(rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """A_i = (r_i - mean_g) / (std over all valid rewards of the batch + 1e-4) (TRL scale_rewards="batch")."""
    s = _group_stats(rewards, group_ids)
    valid = s.rewards[s.valid]
    std = valid.std() if valid.numel() > 1 else valid.new_zeros(())
    return _finish((s.rewards - s.mean) / (std + GRPO_EPS), s, rewards)


def _whiten(centred: Tensor, stats: _GroupStats, lengths: Tensor | None) -> Tensor:
    """(x - mean) / sqrt(var + 1e-8) with token-weighted statistics over the valid rows of the whole batch
    (each row weighted by its length; Bessel's correction over the token count, as verl's masked_whiten)."""
    w = torch.ones_like(centred) if lengths is None else lengths.to(centred.device, torch.float64)
    w = torch.where(stats.valid, w, 0.0)
    n = w.sum()
    mean = (w * centred).sum() / n.clamp(min=1)
    var = (w * (centred - mean) ** 2).sum() / (n - 1).clamp(min=1)
    return (centred - mean) / (var + WHITEN_EPS).sqrt()


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """REINFORCE++ (outcome reward, γ = 1, no critic): every token's return is the completion's reward,
    whitened over all tokens of the batch: A_i = (r_i - μ) / sqrt(σ² + 1e-8), μ and σ² token-weighted.
    Groups are not used. A KL term stays in the loss (algorithm.beta), not folded into the reward."""
    s = _group_stats(rewards, group_ids)
    return _finish(_whiten(s.rewards, s, lengths), s, rewards)


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline(rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """REINFORCE++-baseline: r_i - mean_g (the group mean as baseline, no std), then whitened over all
    tokens of the batch as `reinforce_pp`. A group with a single valid reward is centred to 0."""
    s = _group_stats(rewards, group_ids)
    return _finish(_whiten(s.rewards - s.mean, s, lengths), s, rewards)


@ADVANTAGES.register("opo")
def opo(rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
    """OPO (on-policy RL with the optimal baseline): A_i = r_i - Σ_g l_j r_j / Σ_g l_j, the group mean weighted
    by completion length l (without lengths: the plain group mean, i.e. dr_grpo). A group with a single valid
    reward gets 0, as in the other group estimators."""
    s = _group_stats(rewards, group_ids)
    w = torch.ones_like(s.rewards) if lengths is None else lengths.to(s.rewards.device, torch.float64)
    w = torch.where(s.valid, w, 0.0)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    zeros = torch.zeros(
        int(inverse.max()) + 1 if inverse.numel() else 0, dtype=torch.float64, device=w.device
    )
    baseline = zeros.index_add(0, inverse, w * s.rewards) / zeros.index_add(0, inverse, w).clamp(min=1e-12)
    adv = torch.where(s.count > 1, s.rewards - baseline[inverse], 0.0)
    return _finish(adv, s, rewards)
