"""The sampler/trainer mismatch metrics (stages/rl_mismatch.py) on rollouts of the tiny model whose sampler
log-probs are set to the trainer's plus known offsets, so KL and the ratio extremes are known by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from rl_testkit import rl_config, single_thread
from test_rollout_hf import prompts_for, recomputed_logprobs
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.rollout import HFEngine, SamplingParams
from r1lab.stages.rl_batch import plan_update
from r1lab.stages.rl_mismatch import rollout_mismatch


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_mismatch_kl_and_ratio_extremes_are_the_hand_computed_ones(tmp_path, tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rollouts = HFEngine(model, tokenizer).generate(
        prompts_for(tokenizer), 2, SamplingParams(max_new_tokens=6, seed=0)
    )
    trainer = recomputed_logprobs(model, rollouts, 1.0)
    mask = rollouts.completion_mask.bool()
    # the sampler's log-probs: the trainer's, shifted by d per token (cycling through four offsets)
    offsets = torch.tensor([0.0, 0.1, -0.3, 0.05])
    d = offsets[torch.arange(mask.numel()) % 4].reshape(mask.shape) * mask
    sampler = replace(rollouts, logprobs=(trainer + d) * mask)
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"n": 2}, "train": {"batch_size": 2}})
    plan = plan_update(sampler, torch.ones(len(sampler)), cfg)
    model.train()  # the metrics are taken without dropout, and the model's mode is kept
    got = rollout_mismatch(model, plan, "cpu", 1.0)
    assert model.training

    log_r = -d[mask].double()  # log(pi_trainer / pi_sampler)
    kl = (log_r.exp() - log_r - 1).mean()  # k3 of KL(sampler || trainer)
    assert got["mismatch/kl"] == pytest.approx(float(kl), rel=1e-4)
    assert got["mismatch/ratio_max"] == pytest.approx(math.exp(0.3), rel=1e-4)
    assert got["mismatch/ratio_min"] == pytest.approx(math.exp(-0.1), rel=1e-4)


def test_no_mismatch_when_the_sampler_is_the_trainer(tmp_path, tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rollouts = HFEngine(model, tokenizer).generate(
        prompts_for(tokenizer), 2, SamplingParams(max_new_tokens=6, seed=0)
    )
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"n": 2}, "train": {"batch_size": 4}})
    got = rollout_mismatch(model, plan_update(rollouts, torch.ones(len(rollouts)), cfg), "cpu", 1.0)
    assert got["mismatch/kl"] < 1e-8
    assert got["mismatch/ratio_max"] == pytest.approx(1.0, abs=1e-4)
    assert got["mismatch/ratio_min"] == pytest.approx(1.0, abs=1e-4)
