"""Per-token log-probabilities and entropies from logits, without materialising a full log_softmax copy.

Logits are [B, T, V] with V ~ 150k for real models: a float32 log_softmax of the whole batch doubles the
largest tensor of the step. These functions work on chunks of positions (upcast to float32 per chunk) and
use log p(y) = logit_y - logsumexp(logits), so peak extra memory is one chunk's [CHUNK, V]. Under autograd
each chunk's float32 copy is kept for the backward pass, so the saving is largest for the no-grad passes
(old / reference log-probs, entropy).
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 1024  # positions per chunk: peak extra memory is CHUNK x V float32 (~600 MB at V = 150k)


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"log-probabilities need a temperature > 0, got {temperature}")


def token_logprobs(logits: Tensor, labels: Tensor, temperature: float = 1.0, chunk: int = CHUNK) -> Tensor:
    """log_softmax(logits / temperature) gathered at `labels`: [..., V], [...] -> float32 [...].

    Labels < 0 (the -100 ignore index) give 0. Differentiable w.r.t. the logits.
    """
    _check_temperature(temperature)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])
    index = labels.reshape(-1, 1).clamp(min=0)
    parts = []
    for rows, idx in zip(flat.split(chunk), index.split(chunk), strict=True):
        rows = rows.float() / temperature
        parts.append(rows.gather(-1, idx).squeeze(-1) - torch.logsumexp(rows, dim=-1))
    out = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)
    return out.reshape(labels.shape).masked_fill(labels < 0, 0.0)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0, chunk: int = CHUNK) -> Tensor:
    """Entropy (nats) of softmax(logits / temperature) per position: [..., V] -> float32 [...].

    Call it under torch.no_grad() when it is only logged.
    """
    _check_temperature(temperature)
    flat = logits.reshape(-1, logits.shape[-1])
    parts = []
    for rows in flat.split(chunk):
        logp = torch.log_softmax(rows.float() / temperature, dim=-1)
        parts.append(-(logp.exp() * logp).sum(-1))
    out = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)
    return out.reshape(logits.shape[:-1])
