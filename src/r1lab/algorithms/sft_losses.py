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
