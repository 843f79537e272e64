"""Padding of token lists into the batch layouts the rollout types use: left-padded prompts, and rows
[left-padded prompt | right-padded completion] for a forward pass over completions."""

from __future__ import annotations

import torch
from torch import Tensor


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
    completion starts at column P and its T tokens are the last T columns: the logits at columns P-1 .. P+T-2
    predict them. position_ids count real tokens only, as `generate` does with left padding.
    """
    n = completion_ids.shape[0]
    if len(prompt_ids) != n:
        raise ValueError(f"{len(prompt_ids)} prompts for {n} completions")
    prompts, prompt_mask = left_pad(prompt_ids, pad_token_id, completion_ids.device)
    input_ids = torch.cat([prompts.to(completion_ids.dtype), completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask.to(torch.long)], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids
