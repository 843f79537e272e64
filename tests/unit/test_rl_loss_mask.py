"""Rollouts.loss_mask in the RL update: with loss_mask == completion_mask the update is bit-identical to the
single-mask path (the loss computed on completion_mask, as before the loss mask existed); with "tool" tokens
zeroed in it, the loss is the hand-computed one over the model's tokens only, and neither the loss nor the
gradient depends on the sampler's log-probs at the tool tokens. Plus the mask through select/concat,
mask_truncated, and Episodes.to_rollouts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from rl_testkit import rl_config, single_thread
from test_rl_rollout_correction import _Accelerator
from test_rollout_hf import prompts_for
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.algorithms.policy_losses import LossTotals, compute_policy_loss
from r1lab.rollout import HFEngine, Rollouts, SamplingParams
from r1lab.stages.rl_batch import plan_update, policy_update
from r1lab.stages.rl_forward import completion_logprobs


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rollouts = HFEngine(model, tokenizer).generate(
        prompts_for(tokenizer), 4, SamplingParams(max_new_tokens=8, seed=0)
    )
    assert torch.equal(rollouts.loss_mask, rollouts.completion_mask)  # unset: the completion mask
    return model, rollouts


def _tool_mask(rollouts: Rollouts) -> torch.Tensor:
    """A loss mask with tokens 2 and 3 of every row zeroed, as if they were a tool result."""
    mask = rollouts.completion_mask.clone()
    mask[:, 2:4] = 0
    return mask


def _update(model, rollouts, cfg, advantages):
    model.zero_grad()
    sums = policy_update(model, plan_update(rollouts, advantages, cfg), cfg, _Accelerator(), None)
    return float(sums["loss"]), float(sums["tokens"]), [p.grad.clone() for p in model.parameters()]


def _config(tmp_path, model_dir, **algorithm):
    return rl_config(tmp_path, model_dir, {"train": {"batch_size": 16}, "algorithm": algorithm})


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean"])
def test_loss_mask_equal_to_the_completion_mask_is_the_single_mask_path(
    setup, tmp_path, tiny_model_dir, loss_agg
):
    model, rollouts = setup
    cfg = _config(tmp_path, tiny_model_dir, loss_agg=loss_agg, beta=0.0)
    advantages = torch.linspace(-1, 1, len(rollouts))
    default = _update(model, rollouts, cfg, advantages)
    explicit = _update(model, replace(rollouts, loss_mask=rollouts.completion_mask.clone()), cfg, advantages)

    # the path before the loss mask: completion_mask as the loss mask, the sampler's log-probs as pi_old
    model.zero_grad()
    logp, _ = completion_logprobs(model, model, rollouts, "cpu", 1.0)
    mask = rollouts.completion_mask.float()
    eps_low, eps_high = cfg.algorithm.clip_range()
    loss, _ = compute_policy_loss(
        "ppo_clip", logp, rollouts.logprobs, advantages, mask, loss_agg=loss_agg, eps_low=eps_low,
        eps_high=eps_high, totals=LossTotals.from_mask(mask, cfg.rollout.max_new_tokens),
    )  # fmt: skip
    loss.backward()
    before = (float(loss), float(mask.sum()), [p.grad.clone() for p in model.parameters()])
    for got in (default, explicit):
        assert got[:2] == before[:2] and got[0] != 0
        for a, b in zip(got[2], before[2], strict=True):
            assert torch.equal(a, b)


def test_tool_tokens_get_no_loss_and_no_gradient(setup, tmp_path, tiny_model_dir):
    model, rollouts = setup
    cfg = _config(tmp_path, tiny_model_dir, loss_agg="token_mean", beta=0.0)
    advantages = torch.linspace(-1, 1, len(rollouts))
    loss_mask = _tool_mask(rollouts)
    tool = (rollouts.completion_mask - loss_mask).bool()
    assert tool.sum() > 0
    masked = replace(rollouts, loss_mask=loss_mask)
    loss, tokens, grads = _update(model, masked, cfg, advantages)

    # by hand: -min(r A, clip(r) A) summed over the model's tokens only, over their count (token_mean)
    model.zero_grad()
    logp, _ = completion_logprobs(model, model, rollouts, "cpu", 1.0)
    ratio = torch.exp(logp - rollouts.logprobs)
    a = advantages[:, None]
    per_token = -torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a)
    hand = (per_token * loss_mask).sum() / loss_mask.sum()
    hand.backward()
    assert tokens == float(loss_mask.sum()) < float(rollouts.completion_mask.sum())
    assert loss == pytest.approx(float(hand), abs=1e-6)
    for g, h in zip(grads, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-7)

    # the sampler's log-probs at the tool tokens (0 from an episode; anything here) change nothing
    noise = torch.randn(rollouts.logprobs.shape) * 30
    perturbed = replace(masked, logprobs=rollouts.logprobs + noise * tool)
    again = _update(model, perturbed, cfg, advantages)
    assert again[:2] == (loss, tokens)
    for a_, b_ in zip(again[2], grads, strict=True):
        assert torch.equal(a_, b_)
    # ... while the same noise on the model's tokens does
    moved = _update(model, replace(masked, logprobs=rollouts.logprobs + noise * loss_mask), cfg, advantages)
    assert moved[0] != loss


def test_kl_and_entropy_count_only_the_model_tokens(setup, tmp_path, tiny_model_dir):
    """With a KL term (against a perturbed copy as the reference) the logged kl and entropy sums run over
    the loss mask: equal to those of the same rows whose tool tokens are cut out of the sums by hand."""
    model, rollouts = setup
    cfg = _config(tmp_path, tiny_model_dir, loss_agg="token_mean", beta=0.1)
    loss_mask = _tool_mask(rollouts)
    ref_model = AutoModelForCausalLM.from_config(model.config)
    ref_model.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()})

    def reference(rows, device, temperature):
        with torch.no_grad():
            return completion_logprobs(ref_model, ref_model, rows, device, temperature)[0]

    plan = plan_update(replace(rollouts, loss_mask=loss_mask), torch.linspace(-1, 1, len(rollouts)), cfg)
    model.zero_grad()
    sums = policy_update(model, plan, cfg, _Accelerator(), reference)
    with torch.no_grad():
        logp, entropy = completion_logprobs(model, model, rollouts, "cpu", 1.0)
        ref = reference(rollouts, "cpu", 1.0)
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    assert float(sums["kl"]) == pytest.approx(float((k3 * loss_mask).sum()), rel=1e-4)
    assert float(sums["entropy"]) == pytest.approx(float((entropy * loss_mask).sum()), rel=1e-4)
    assert float(sums["kl"]) < float((k3 * rollouts.completion_mask).sum())


def test_select_concat_and_mask_truncated_keep_the_two_masks_apart(setup, tmp_path, tiny_model_dir):
    _, rollouts = setup
    loss_mask = _tool_mask(rollouts)
    extras = [{"tool_calls": i} for i in range(len(rollouts))]
    r = replace(rollouts, loss_mask=loss_mask, extras=extras)
    part = r.select([5, 1])
    width = part.completion_ids.shape[1]
    assert torch.equal(part.loss_mask, loss_mask[[5, 1], :width])
    assert part.extras == [{"tool_calls": 5}, {"tool_calls": 1}]
    both = Rollouts.concat([part, rollouts.select([0])])
    assert torch.equal(both.loss_mask[2], rollouts.completion_mask[0, : both.loss_mask.shape[1]])
    assert both.extras == [{"tool_calls": 5}, {"tool_calls": 1}, {}]
    assert both.completion_lengths == [int(loss_mask[5].sum()), int(loss_mask[1].sum()),
                                       int(rollouts.completion_mask[0].sum())]  # fmt: skip

    cfg = rl_config(
        tmp_path, tiny_model_dir, {"train": {"batch_size": 16}, "algorithm": {"mask_truncated": True}}
    )
    reasons = ["length" if i % 2 else "stop" for i in range(len(r))]
    plan = plan_update(replace(r, finish_reasons=reasons), torch.linspace(-1, 1, len(r)), cfg)
    kept = [i for i in range(len(r)) if i % 2 == 0]
    assert torch.equal(plan.rows.loss_mask, loss_mask[kept, : plan.rows.loss_mask.shape[1]])
    assert plan.totals.tokens == float(loss_mask[kept].sum()) and plan.totals.sequences == len(kept)
    # the attention mask of the kept rows is untouched (a row still attends to its tool results)
    assert torch.equal(
        plan.rows.completion_mask, rollouts.completion_mask[kept, : plan.rows.loss_mask.shape[1]]
    )


def test_episodes_become_rollouts_with_the_loss_mask_of_the_model_tokens(tiny_model_dir):
    from test_multiturn import CALL, IM_END, ScriptedEngine, add_box

    from r1lab.rollout.multiturn import ToolFormat, run_episodes

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    box = add_box()
    fmt = ToolFormat(tokenizer, box)
    prompt = fmt.prompt_ids([{"role": "user", "content": "What is 12 + 7?"}])
    engine = ScriptedEngine(tokenizer, {"12 + 7": [CALL, "It is 19." + IM_END]})
    ep = run_episodes(
        engine, tokenizer, box, [prompt], 2, SamplingParams(max_new_tokens=64), max_turns=1, fmt=fmt
    )
    r = ep.to_rollouts()  # max_turns 1: the call is not run, the episode ends "max_turns" (not truncated)
    assert r.finish_reasons == ["stop", "stop"] and r.extras[0]["episode_finish"] == "max_turns"
    ep = run_episodes(
        engine, tokenizer, box, [prompt], 2, SamplingParams(max_new_tokens=64), max_turns=3, fmt=fmt
    )
    r = ep.to_rollouts()
    assert torch.equal(r.completion_mask, ep.attention_mask) and torch.equal(r.loss_mask, ep.loss_mask)
    assert r.texts == ["It is 19.", "It is 19."] and r.finish_reasons == ["stop", "stop"]
    model_tokens = len(tokenizer(CALL, add_special_tokens=False)["input_ids"]) + len(
        tokenizer("It is 19." + IM_END, add_special_tokens=False)["input_ids"]
    )
    assert r.completion_lengths == [model_tokens] * 2  # the tool segment is attended to, not counted
    assert r.completion_mask.sum(-1).tolist() > [model_tokens] * 2
    x = r.extras[0]
    assert (x["turns"], x["tool_calls"], x["tool_errors"], x["episode_finish"]) == (2, 1, 0, "answer")
    assert "<tool_response>\n19\n</tool_response>" in x["episode_text"]
