"""The shared-prompt forward of the RL update gives the plain per-row forward's logits and gradients."""

from __future__ import annotations

import pytest
import torch
from rl_testkit import single_thread
from transformers import AutoModelForCausalLM

from r1lab.algorithms.logprobs import token_logprobs
from r1lab.rollout import HFEngine, SamplingParams
from r1lab.stages.rl_forward import _plain, completion_logits


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_shared_prompt_forward_matches_the_plain_one(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    engine = HFEngine(model, tiny_tokenizer)
    prompts = [tiny_tokenizer.encode(text) for text in ["What is 12 + 7?", "Hello! How are you? I am"]]
    rollouts = engine.generate(prompts, 3, SamplingParams(max_new_tokens=6, seed=0))
    rows = rollouts.select([4, 0, 5, 1, 3])  # groups interleaved and split, prompts of different lengths
    assert len(set(map(len, rows.prompt_ids))) == 2

    grads = []
    for forward in (lambda: completion_logits(model, model, rows, "cpu"), lambda: _plain(model, rows, "cpu")):
        model.zero_grad()
        logits = forward()
        logp = token_logprobs(logits, rows.completion_ids)
        (logp * rows.completion_mask).sum().backward()
        grads.append((logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (shared, g_shared), (plain, g_plain) = grads
    mask = rows.completion_mask.bool()
    torch.testing.assert_close(shared[mask], plain[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared[mask], rows.logprobs[mask], rtol=1e-4, atol=1e-4)  # = the sampler's
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_rows_with_zero_advantage_are_not_run_but_counted():
    """Their loss and gradient are exactly 0 without a KL term; the normalisers still count their tokens."""
    from r1lab.config import RLConfig, validate
    from r1lab.rollout import Rollouts
    from r1lab.stages.rl_batch import plan_update

    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    batch = Rollouts(
        prompt_index=[0, 0, 1, 1],
        prompt_ids=[[5, 6], [5, 6], [7], [7]],
        completion_ids=torch.ones(4, 3, dtype=torch.long),
        completion_mask=mask,
        logprobs=torch.zeros(4, 3),
        finish_reasons=["stop"] * 4,
        texts=["a", "b", "c", "d"],
    )
    advantages = torch.tensor([0.0, 1.0, 0.0, -1.0])
    cfg = validate(RLConfig, {"data": {"path": "prompts.jsonl"}})
    plan = plan_update(batch, advantages, cfg)
    assert plan.rows.texts == ["b", "d"] and plan.advantages.tolist() == [1.0, -1.0]
    assert (plan.totals.tokens, plan.totals.sequences) == (8.0, 4.0)
    with_kl = cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"beta": 0.1})})
    assert plan_update(batch, advantages, with_kl).rows.texts == ["a", "b", "c", "d"]
