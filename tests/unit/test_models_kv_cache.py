"""cache_kwarg names the KV-cache keyword the model's forward really takes, through a LoRA wrapper too."""

from __future__ import annotations

import inspect

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from r1lab.models.kv_cache import cache_kwarg


def test_cache_kwarg_is_accepted_by_the_forward_and_carries_the_cache(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    name = cache_kwarg(model)
    assert name in inspect.signature(model.forward).parameters
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        out = model(input_ids=ids[:, :3], use_cache=True)
        cache = out.get("cache", out.past_key_values)
        step = model(input_ids=ids[:, 3:], position_ids=torch.tensor([[3]]), use_cache=True, **{name: cache})
    torch.testing.assert_close(step.logits[:, -1], full, atol=1e-5, rtol=1e-5)  # the cache was used


def test_cache_kwarg_looks_through_a_lora_wrapper(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert cache_kwarg(wrapped) == cache_kwarg(model)
