"""The RL update's forward (shared prompts, length buckets, fused output head) gives the plain per-row
forward's log-probs, entropies and gradients."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from rl_testkit import single_thread
from transformers import AutoModelForCausalLM

from r1lab.algorithms.logprobs import entropy_from_logits, token_logprobs
from r1lab.rollout import HFEngine, SamplingParams
from r1lab.stages import rl_forward
from r1lab.stages.rl_forward import _plain, completion_logprobs, length_buckets, output_head
from tiny import tiny_config


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def _rollouts(model, tokenizer):
    engine = HFEngine(model, tokenizer)
    prompts = [tokenizer.encode(text) for text in ["What is 12 + 7?", "Hello! How are you? I am"]]
    rollouts = engine.generate(prompts, 3, SamplingParams(max_new_tokens=6, seed=0, stop=("a",)))
    rows = rollouts.select([4, 0, 5, 1, 3])  # groups interleaved and split, prompts of different lengths
    assert len(set(map(len, rows.prompt_ids))) == 2
    return rows


def _logprobs_and_grads(model, forward, rows):
    model.zero_grad()
    logp, entropy = forward()
    (logp * rows.completion_mask * torch.linspace(-1, 2, logp.numel()).view_as(logp)).sum().backward()
    return logp.detach(), entropy, {n: p.grad.clone() for n, p in model.named_parameters()}


def _plain_logprobs(model, rows, temperature):
    logits = _plain(model, rows, "cpu", head=None)
    mask = rows.completion_mask
    logp = token_logprobs(logits, rows.completion_ids, temperature) * mask
    return logp, entropy_from_logits(logits.detach(), temperature) * mask


@pytest.mark.parametrize("overhead", [0, 10_000])  # a bucket per length / one bucket for all rows
def test_shared_prompt_forward_matches_the_plain_one(tiny_model_dir, tiny_tokenizer, monkeypatch, overhead):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = _rollouts(model, tiny_tokenizer)
    lengths = rows.completion_mask.sum(-1).tolist()
    monkeypatch.setattr(rl_forward, "BUCKET_OVERHEAD", overhead)
    assert len(length_buckets(lengths, overhead)) == (len(set(lengths)) if overhead == 0 else 1)
    assert output_head(model) is model.lm_head  # tied to the embedding: its gradient gets both parts

    ours = _logprobs_and_grads(model, lambda: completion_logprobs(model, model, rows, "cpu", 0.7), rows)
    plain = _logprobs_and_grads(model, lambda: _plain_logprobs(model, rows, 0.7), rows)
    mask = rows.completion_mask.bool()
    torch.testing.assert_close(ours[0], plain[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], plain[1], rtol=1e-5, atol=1e-5)
    assert (ours[0][~mask] == 0).all() and (ours[1][~mask] == 0).all()
    at_one, _ = completion_logprobs(model, model, rows, "cpu", 1.0)
    torch.testing.assert_close(at_one[mask], rows.logprobs[mask], rtol=1e-4, atol=1e-4)  # = the sampler's
    for name in plain[2]:
        torch.testing.assert_close(ours[2][name], plain[2][name], rtol=1e-4, atol=1e-6, msg=name)


def test_logits_that_are_more_than_the_head_take_the_plain_path(tiny_tokenizer):
    """Gemma-2 soft-caps its logits (so the head is not fused) and its sliding-window cache layers are not
    plain ones (so all rows run as one bucket); the result is still the plain forward's."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        tiny_config(tiny_tokenizer, "gemma2"), dtype=torch.float32, attn_implementation="eager"
    )
    assert output_head(model) is None
    rows = _rollouts(model, tiny_tokenizer)
    ours = _logprobs_and_grads(model, lambda: completion_logprobs(model, model, rows, "cpu", 1.0), rows)
    plain = _logprobs_and_grads(model, lambda: _plain_logprobs(model, rows, 1.0), rows)
    torch.testing.assert_close(ours[0], plain[0], rtol=1e-5, atol=1e-5)
    for name in plain[2]:
        torch.testing.assert_close(ours[2][name], plain[2][name], rtol=1e-4, atol=1e-6, msg=name)


def test_length_buckets_are_the_cheapest_split():
    rng = random.Random(0)
    for _ in range(30):
        lengths = [rng.randint(1, 20) for _ in range(rng.randint(1, 7))]
        overhead = rng.choice([0, 5, 30])
        buckets = length_buckets(lengths, overhead)
        assert sorted(r for b in buckets for r in b) == list(range(len(lengths)))

        def cost(split, lengths=lengths, overhead=overhead):
            return sum(len(b) * max(lengths[r] for r in b) + overhead for b in split)

        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        cheapest = min(  # every split of the sorted rows into contiguous runs
            cost([order[a:b] for a, b in itertools.pairwise((0, *cuts, len(order)))])
            for k in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), k)
        )
        assert cost(buckets) == cheapest
    assert length_buckets([], 10) == []
    assert length_buckets([3, 9, 3, 9], 0) == [[0, 2], [1, 3]]  # shortest bucket first


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


@pytest.mark.slow
def test_smollm2_fused_head_and_buckets_match_the_plain_forward(monkeypatch):
    """On the real default model (large logits, tied 49k-token head): log-probs and gradients agree."""
    monkeypatch.delenv("R1LAB_HOME", raising=False)  # use the shared model cache
    monkeypatch.setattr(rl_forward, "BUCKET_OVERHEAD", 0)
    from transformers import AutoTokenizer

    from r1lab.models import pull

    path = pull("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        for q in ["What is 2 + 3?", "Name a colour and say why you like it."]
    ]
    prompts = [p["input_ids"] if hasattr(p, "keys") else p for p in prompts]
    sampling = SamplingParams(temperature=0.7, max_new_tokens=16, stop=(".",), seed=0)
    rows = HFEngine(model, tokenizer).generate(prompts, 3, sampling)
    assert len(set(rows.completion_mask.sum(-1).tolist())) > 1  # several buckets
    assert output_head(model) is model.lm_head

    ours = _logprobs_and_grads(model, lambda: completion_logprobs(model, model, rows, "cpu", 0.7), rows)
    plain = _logprobs_and_grads(model, lambda: _plain_logprobs(model, rows, 0.7), rows)
    torch.testing.assert_close(ours[0], plain[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[1], plain[1], rtol=1e-4, atol=1e-4)
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
        want = plain[2][name]  # float32 sums in another order: within 2e-5 of the gradient's largest entry
        torch.testing.assert_close(ours[2][name], want, rtol=0, atol=2e-5 * want.abs().max().item(), msg=name)


def test_gradient_checkpointing_takes_the_plain_forward_with_the_fused_head(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = _rollouts(model, tiny_tokenizer)
    plain = _logprobs_and_grads(model, lambda: _plain_logprobs(model, rows, 1.0), rows)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    assert rl_forward._checkpointing(model)
    ours = _logprobs_and_grads(model, lambda: completion_logprobs(model, model, rows, "cpu", 1.0), rows)
    torch.testing.assert_close(ours[0], plain[0], rtol=1e-5, atol=1e-5)
    for name in plain[2]:
        torch.testing.assert_close(ours[2][name], plain[2][name], rtol=1e-4, atol=1e-6, msg=name)
