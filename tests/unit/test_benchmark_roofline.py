"""The roofline pieces of benchmarks/rollout_throughput.py: FLOP counts on a tiny Llama whose sizes are worked out
by hand, and against torch's own FLOP counter on a real decode step; the scaling table's arithmetic."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from grpo_scaling import table
from r1lab.models.kv_cache import cache_kwarg
from roofline import Shape, decode_step_flops, generation_flops, model_shape, prefill_flops


def tiny() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(cfg).eval()


# per layer q 8x8, k 8x4, v 8x4, o 8x8, gate/up/down 8x16 each: 576; 2 layers + head 32x8
SHAPE = Shape(linear_params=2 * 576 + 256, head_params=256, layers=2, attn_width=8)


def test_model_shape_counts_every_linear_and_the_query_width():
    assert model_shape(tiny()) == SHAPE


def test_flop_formulas_on_hand_computed_values():
    assert decode_step_flops(SHAPE, [3, 5]) == 2 * 1408 * 2 + 4 * 2 * 8 * 8  # 6144
    assert prefill_flops(SHAPE, 3) == 2 * 1152 * 3 + 2 * 256 + 2 * 2 * 8 * 3 * 4  # 7808
    # one prompt of 3 tokens, 2 samples, 3 new tokens: prefill, then steps attending to 4 and 5 keys
    assert generation_flops(SHAPE, [3], 2, 3) == {"prefill": 7808, "decode": 6144 + 6272, "total": 20224}


def test_decode_step_flops_equal_torchs_count_on_a_real_step():
    model, batch, past = tiny(), 2, 5
    ids = torch.randint(0, 32, (batch, past + 1))
    key = cache_kwarg(model)  # transformers' name for the KV cache argument
    with torch.no_grad():
        cache = model(ids[:, :past], **{key: DynamicCache()}, use_cache=True).past_key_values
        with FlopCounterMode(display=False) as counter:
            model(ids[:, past:], **{key: cache}, use_cache=True)
    assert counter.get_total_flops() == decode_step_flops(SHAPE, [past + 1] * batch)


def test_scaling_table_means_and_ratio():
    def step(s: float, g: float) -> dict[str, float]:
        return {"step": s, "generation": g}

    cells = [
        {
            "G": 4,
            "max_new_tokens": 64,
            "r1lab-hf": [step(1, 0.5), step(3, 1.5)],
            "trl": [step(6, 4), step(6, 2)],
        }
    ]
    lines = table(cells, ["r1lab-hf", "trl"]).splitlines()
    assert lines[0] == "| G | max_new_tokens | r1lab-hf s/step (gen) | trl s/step (gen) | TRL / r1lab-hf |"
    assert lines[2] == "| 4 | 64 | 2.00 (1.00) | 6.00 (3.00) | 3.00x |"
