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

from r1lab.errors import UserError

CHUNK = 1024  # positions per chunk: peak extra memory is CHUNK x V float32 (~600 MB at V = 150k)


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise UserError(
            f"log-probabilities need a sampling temperature > 0, got {temperature}",
            where="rollout.temperature",
            fix="set rollout.temperature to a positive value (e.g. 1.0) for RL training",
        )


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


def left_pad(
    sequences: list[list[int]], pad_token_id: int, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Token lists as one left-padded LongTensor [N, longest] and its attention mask (1 on real tokens)."""
    width = max((len(seq) for seq in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(seq)
            mask[i, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def concat_prompt_completion(
    prompt_ids: list[list[int]], completion_ids: Tensor, completion_mask: Tensor, pad_token_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Rows [left-padded prompt | right-padded completion] for a policy forward pass.

    Returns input_ids, attention_mask and position_ids, all [N, P + T] where P is the longest prompt, so every
    completion starts at column P and its T tokens are the last T columns (what `completion_logprobs` expects).
    position_ids count real tokens only, as `generate` does with left padding.
    """
    n = completion_ids.shape[0]
    if len(prompt_ids) != n:
        raise ValueError(f"{len(prompt_ids)} prompts for {n} completions")
    prompts, prompt_mask = left_pad(prompt_ids, pad_token_id, completion_ids.device)
    input_ids = torch.cat([prompts.to(completion_ids.dtype), completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask.to(torch.long)], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def completion_logprobs(
    logits: Tensor, completion_ids: Tensor, temperature: float = 1.0, *, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Log-probs (and optionally detached entropies) of the completion tokens, both float32 [N, T].

    `logits` come from a forward pass over rows whose last T columns are the completion (as built by
    `concat_prompt_completion`); the logits at column j predict token j+1, so the completion's are the
    T columns before the last. A forward with `logits_to_keep=T + 1` gives just enough.
    """
    t = completion_ids.shape[1]
    if logits.shape[1] < t + 1:
        raise ValueError(f"need logits for at least {t + 1} positions, got {logits.shape[1]}")
    logits = logits[:, -t - 1 : -1]
    logp = token_logprobs(logits, completion_ids, temperature)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits, temperature)
    return logp, entropy
