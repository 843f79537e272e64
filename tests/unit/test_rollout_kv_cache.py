"""The preallocated KV cache gives the same logits as transformers' DynamicCache."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, MistralConfig
from transformers.cache_utils import DynamicLayer

from r1lab.rollout.kv_cache import PreallocatedLayer, preallocated_cache


def run(model, cache, ids: torch.Tensor, mask: torch.Tensor, steps: int, repeat: int) -> list[torch.Tensor]:
    """Prefill, repeat the cache, then feed the greedy token for `steps` steps; return every step's logits."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache).logits[:, -1]
        cache.batch_repeat_interleave(repeat)
        logits, mask = logits.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
        nxt = pos[:, -1].repeat_interleave(repeat) + 1
        out = [logits]
        for t in range(steps):
            if t == 2:  # drop a row, as the engine does when one finishes
                keep = torch.arange(1, logits.shape[0])
                cache.batch_select_indices(keep)
                logits, mask, nxt = logits[keep], mask[keep], nxt[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            token = logits.argmax(-1, keepdim=True)
            logits = model(
                input_ids=token, attention_mask=mask, position_ids=(nxt + t)[:, None], cache=cache
            ).logits[:, -1]
            out.append(logits)
    return out


def test_same_logits_as_dynamic_cache(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[3, 3, 10, 11, 12], [20, 21, 22, 23, 24]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    cache = preallocated_cache(model.config, capacity=5 + 6)
    assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    ours = run(model, cache, ids, mask, steps=6, repeat=2)
    ref = run(model, DynamicCache(config=model.config), ids, mask, steps=6, repeat=2)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert cache.get_seq_length() == 11


def test_capacity_is_enforced(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    cache = preallocated_cache(model.config, capacity=4)
    with pytest.raises(RuntimeError, match="capacity"), torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7, 8, 9]]), cache=cache)


def test_sliding_window_layers_keep_transformers_own():
    config = MistralConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=4,
    )  # fmt: skip
    cache = preallocated_cache(config, capacity=64)
    assert cache.layers and not any(
        type(layer) in (PreallocatedLayer, DynamicLayer) for layer in cache.layers
    )
