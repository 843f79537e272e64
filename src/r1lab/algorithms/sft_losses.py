"""SFT losses: pure tensor math. Each returns (summed loss, number of target tokens) so the caller can
normalise by the target-token count of the whole accumulated, multi-process batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1lab.registry import Registry

IGNORE_INDEX = -100

SFT_LOSSES: Registry = Registry("sft loss")


@SFT_LOSSES.register("nll")
def nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token negative log-likelihood over positions whose label is not -100.

    `logits` [..., V] are already aligned with `labels` [...] (logit i predicts label i); the log-softmax
    is computed in fp32 even under bf16 autocast.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (flat_labels != IGNORE_INDEX).sum()


@SFT_LOSSES.register("otr")
def otr(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int = 8,
    temperature: float = 1.0,
    negative_reward: float = -0.1,
    nll_weight: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-Token Rollout: at each target position sample `k` tokens a_1..a_k from softmax(logits / temperature)
    (no gradient through the draw), reward r = 1 where a = the gold token and `negative_reward` elsewhere, and
    return the summed per-position loss -(1/k) sum_j r_j log pi(a_j) + nll_weight * (-log pi(gold)).

    With every sample the gold token (a peaked distribution, or negative_reward 1 on a one-token vocabulary)
    the policy-gradient term is the NLL itself. Draws use `generator`, else torch's global RNG (which the
    checkpoints save, so a resumed run draws the same tokens)."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"otr needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    keep = flat_labels != IGNORE_INDEX
    flat_logits, gold = flat_logits[keep], flat_labels[keep]
    logp = torch.log_softmax(flat_logits, dim=-1)
    with torch.no_grad():
        probs = torch.softmax(flat_logits / temperature, dim=-1)
        samples = torch.multinomial(probs, k, replacement=True, generator=generator)  # [N, k]
        reward = torch.where(samples == gold[:, None], 1.0, negative_reward)
    policy_gradient = -(reward * logp.gather(1, samples)).mean(dim=1)
    nll_term = -logp.gather(1, gold[:, None]).squeeze(1)
    return (policy_gradient + nll_weight * nll_term).sum(), keep.sum()
