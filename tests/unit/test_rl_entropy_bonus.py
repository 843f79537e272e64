"""The entropy bonus (algorithm.entropy_coef): loss - coef x entropy, with the entropy's gradient flowing
through the fused output head and the RL forward into the model."""

from __future__ import annotations

import pytest
import torch
from rl_testkit import single_thread
from transformers import AutoModelForCausalLM

from r1lab.algorithms.linear_logprobs import linear_logprobs
from r1lab.algorithms.logprobs import entropy_from_logits, token_logprobs
from r1lab.algorithms.policy_losses import LossTotals, compute_policy_loss
from r1lab.rollout import HFEngine, SamplingParams
from r1lab.stages.rl_forward import _plain, completion_logprobs


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_linear_logprobs_entropy_gradient_matches_autograd(temperature):
    torch.manual_seed(0)
    hidden = torch.randn(10, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True)
    labels = torch.randint(0, 50, (10,))
    a, b = torch.randn(10), torch.randn(10)  # arbitrary upstream gradients of logp and of the entropy
    inputs = [hidden, weight, bias]
    logits = torch.nn.functional.linear(hidden, weight, bias)
    for weights in [(a, b), (0 * a, b)]:  # with and without the log-prob term
        logp, entropy = linear_logprobs(hidden, weight, bias, labels, temperature, chunk=3)
        ours = torch.autograd.grad((logp * weights[0] + entropy * weights[1]).sum(), inputs)
        plain = token_logprobs(logits, labels, temperature) * weights[0]
        plain = plain + entropy_from_logits(logits, temperature) * weights[1]
        expected = torch.autograd.grad(plain.sum(), inputs, retain_graph=True)
        for got, want in zip(ours, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_entropy_is_only_logged_without_entropy_grad(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = _rows(model, tiny_tokenizer)
    _, entropy = completion_logprobs(model, model, rows, "cpu", 0.7)
    assert not entropy.requires_grad


def _rows(model, tokenizer):
    engine = HFEngine(model, tokenizer)
    prompts = [tokenizer.encode(text) for text in ["What is 12 + 7?", "Hello! How are"]]
    return engine.generate(prompts, 2, SamplingParams(max_new_tokens=5, seed=0))


def _param_grads(model, value: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    value.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fused", [True, False])
def test_entropy_gradient_reaches_the_model(tiny_model_dir, tiny_tokenizer, monkeypatch, fused):
    """The RL forward's entropy (fused head, or the plain logits path) has the gradient of the entropy of
    the plain per-row forward, into every parameter."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = _rows(model, tiny_tokenizer)
    if not fused:
        monkeypatch.setattr("r1lab.stages.rl_forward.output_head", lambda _model: None)
    mask = rows.completion_mask.float()
    weights = torch.linspace(-1, 2, mask.numel()).view_as(mask) * mask
    _, entropy = completion_logprobs(model, model, rows, "cpu", 0.7, entropy_grad=True)
    ours = _param_grads(model, (entropy * weights).sum())
    logits = _plain(model, rows, "cpu", head=None)
    expected = _param_grads(model, (entropy_from_logits(logits, 0.7) * weights).sum())
    assert ours.keys() == expected.keys() and len(ours) > 3
    for name, grad in expected.items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-3, atol=1e-5, msg=name)
    assert any(g.abs().sum() > 0 for g in ours.values())


TOTALS = LossTotals(tokens=5, sequences=2, max_completion_length=4)
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_entropy_bonus_subtracts_coef_times_the_aggregated_entropy(agg):
    logp = torch.zeros(2, 3, requires_grad=True)
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]], requires_grad=True)  # 100 is masked out

    def run(coef: float) -> torch.Tensor:
        return compute_policy_loss(
            "ppo_clip", logp, torch.zeros(2, 3), torch.tensor([1.0, -2.0]), MASK, loss_agg=agg, eps_low=0.2,
            eps_high=0.2, totals=TOTALS, entropy=entropy, entropy_coef=coef,
        )[0]  # fmt: skip

    mean_entropy = {
        "token_mean": 15 / 5,
        "seq_mean_token_mean": (2 + 4.5) / 2,
        "seq_mean_token_sum_norm": 15 / 8,
    }
    torch.testing.assert_close(run(0.1), run(0.0) - 0.1 * mean_entropy[agg])
    (grad,) = torch.autograd.grad(run(0.1), entropy)
    denom = {
        "token_mean": 5.0,
        "seq_mean_token_mean": torch.tensor([[6.0], [4.0]]),
        "seq_mean_token_sum_norm": 8.0,
    }
    torch.testing.assert_close(grad, -0.1 * MASK / denom[agg])


def test_entropy_bonus_refuses_a_detached_entropy():
    logp = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="gradient"):
        compute_policy_loss(
            "gpg", logp, torch.zeros(2, 3), torch.ones(2), MASK, loss_agg="token_mean", eps_low=None,
            eps_high=None, totals=TOTALS, entropy=torch.ones(2, 3), entropy_coef=0.1,
        )  # fmt: skip
