"""Batching: right-padding, or padding-free packing of several examples into one row.

A packed row concatenates examples, and `position_ids` restart at 0 for each one. transformers (v5) turns such
position_ids into a block-diagonal causal mask itself (masking_utils.find_packed_sequence_indices) for eager,
sdpa and flex attention, so the packed loss equals the unpacked one in any dtype (tested on CPU; checked on
CUDA in bf16/fp16/fp32). flash-attention reads packing from position_ids only for a batch of one row
(modeling_flash_attention_utils._is_packed_sequence): use batch_size 1 with it.

The forward MUST pass `use_cache=False`: by default a forward builds a DynamicCache, transformers then skips the
packed-sequence detection, and the examples silently attend to each other. Where an explicit mask is wanted
instead, `block_causal_mask(position_ids, dtype=<the model's compute dtype>)` gives a 4D additive one (eager and
sdpa use a 4D mask as given). Its dtype matters: on CUDA, sdpa with a float32 mask and bf16/fp16 queries gives
wrong outputs; a boolean mask works for sdpa but eager attention adds it as 0/1, i.e. does not mask at all.
"""

from __future__ import annotations

import bisect
from typing import Any

import torch

from r1lab.data.tokenize import IGNORE

Example = dict[str, Any]  # {"input_ids": list[int], "labels": list[int], ...}


def pack(examples: list[Example], max_length: int) -> list[list[Example]]:
    """Group examples into rows of at most `max_length` tokens (best-fit decreasing; deterministic)."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    rows: list[list[Example]] = []
    free: list[tuple[int, int]] = []  # sorted (space left, row index)
    for i in order:
        n = len(examples[i]["input_ids"])
        if n > max_length:
            raise ValueError(f"an example of {n} tokens is longer than max_length {max_length}")
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            rows.append([])
            space, row = max_length, len(rows) - 1
        else:
            space, row = free.pop(k)
        rows[row].append(examples[i])
        if space - n > 0:
            bisect.insort(free, (space - n, row))
    return rows


def collate(
    examples: list[Example] | list[list[Example]], pad_token_id: int, *, packing: bool, max_length: int
) -> dict[str, torch.Tensor]:
    """Tensors for a CausalLM forward (labels aside): pass them with `use_cache=False`.

    Unpacked: input_ids, labels, attention_mask (2D: 1 = token, 0 = pad); one example per row, right-padded
    to the longest. Packed: input_ids, labels, position_ids (no attention_mask, see the module doc); `examples`
    are packed with `pack`, or given already packed as a list of rows. Padding is never a target (-100).
    """
    if not packing:
        rows = [[e] for e in examples]
    elif examples and isinstance(examples[0], list):
        rows = examples  # already packed
    else:
        rows = pack(examples, max_length)  # type: ignore[arg-type]
    width = max(sum(len(e["input_ids"]) for e in row) for row in rows)
    if width > max_length:
        raise ValueError(f"a row of {width} tokens is longer than max_length {max_length}")
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e["input_ids"])
            input_ids[r, at : at + n] = torch.tensor(e["input_ids"])
            labels[r, at : at + n] = torch.tensor(e["labels"])
            labels[r, at] = IGNORE  # the first token is never predicted within its example: no leak across
            position_ids[r, at : at + n] = torch.arange(n)
            at += n
        position_ids[r, at:] = torch.arange(width - at)  # padding is a block of its own
    if not packing:
        lengths = torch.tensor([len(row[0]["input_ids"]) for row in rows])
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": (torch.arange(width)[None] < lengths[:, None]).long(),
        }
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
    }


def block_causal_mask(position_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, 1, T, T] additive mask from packed position_ids (a new example starts wherever position is 0)."""
    segment = (position_ids == 0).cumsum(-1)
    same = segment[:, :, None] == segment[:, None, :]
    n = position_ids.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=position_ids.device).tril()
    allowed = (same & causal)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
