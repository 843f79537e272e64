"""Outcome reward model losses and metrics: pure tensor math on scalar rewards r (one per sequence).

Losses (per example, [B] float32; the trainer averages them over the whole accumulated batch):
  bce            pointwise, labels y in {0, 1}: -(y log σ(r) + (1 - y) log σ(-r))
  bradley_terry  pairwise, chosen over rejected: -log σ(r_c - r_r)
  prm_bce        per step (process reward model): scores and labels [B, S], label -1 where a row has no step k;
                 the mean over a row's steps of the BCE of σ(score) against the step's 0/1 label
Metrics (held-out):
  auc            rank-based ROC AUC (Mann-Whitney U / (n_pos n_neg)), ties counted one half
  ece            expected calibration error: 10 equal-width bins of the predicted probability p,
                 sum over bins of (bin size / N) |mean(y) - mean(p)|
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from r1lab.registry import Registry

RewardLoss = Callable[[Tensor, Tensor], Tensor]
REWARD_LOSSES: Registry[RewardLoss] = Registry("reward model loss")
PAIRWISE = {"bradley_terry"}  # losses on (chosen, rejected) rewards; the others take (rewards, labels)
STEPWISE = {"prm_bce"}  # losses on per-step scores and labels [B, S] (-1: no such step)


@REWARD_LOSSES.register("bce")
def bce(rewards: Tensor, labels: Tensor) -> Tensor:
    """Pointwise: binary cross-entropy of σ(reward) against the 0/1 label."""
    if rewards.shape != labels.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and labels {tuple(labels.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(rewards.float(), labels.float(), reduction="none")


@REWARD_LOSSES.register("bradley_terry")
def bradley_terry(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Pairwise: -log σ(r_chosen - r_rejected)."""
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} differ in shape")
    return -F.logsigmoid(chosen.float() - rejected.float())


@REWARD_LOSSES.register("prm_bce")
def prm_bce(scores: Tensor, labels: Tensor) -> Tensor:
    """Per step: BCE of σ(score) against each step's 0/1 label, averaged over the row's steps (label -1: no
    step there, left out). A row with no step at all is an error."""
    if scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} differ in shape")
    present = labels >= 0
    steps = present.sum(-1)
    if bool((steps == 0).any()):
        raise ValueError("a row has no labelled step")
    per_step = F.binary_cross_entropy_with_logits(
        scores.float(), labels.clamp(min=0).float(), reduction="none"
    )
    return (per_step * present).sum(-1) / steps


def first_error(labels: Tensor) -> Tensor:
    """Per row of 0/1 step labels [B, S] (-1: no step), the index of the first 0 label, or S when there is none."""
    bad = labels == 0
    width = labels.shape[-1]
    index = torch.arange(width, device=labels.device).expand_as(labels)
    return torch.where(bad, index, torch.full_like(index, width)).min(-1).values


def auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC from ranks: the chance a random positive scores above a random negative (ties: 1/2)."""
    scores, labels = scores.double().flatten(), labels.flatten().bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes among the labels")
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    values, inverse = torch.unique(scores, return_inverse=True)  # average rank within each run of ties
    mean_rank = torch.zeros(len(values), dtype=scores.dtype).index_add_(0, inverse, ranks)
    mean_rank /= torch.bincount(inverse, minlength=len(values)).to(scores.dtype)
    u = mean_rank[inverse][labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def ece(probs: Tensor, labels: Tensor, bins: int = 10) -> float:
    """Expected calibration error over `bins` equal-width bins of [0, 1] (p = 1 goes in the last bin)."""
    probs, labels = probs.double().flatten(), labels.double().flatten()
    if len(probs) == 0:
        raise ValueError("ECE of no predictions")
    which = (probs * bins).long().clamp(0, bins - 1)
    # per bin |sum(y - p)| = size x |mean(y) - mean(p)|
    gap = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, labels - probs).abs()
    return float(gap.sum() / len(probs))
