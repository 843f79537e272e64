"""Token log-probs and entropies against the naive full log_softmax and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.linear_logprobs import linear_logprobs
from r1lab.algorithms.logprobs import entropy_from_logits, token_logprobs


def naive_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.log_softmax(logits.float() / temperature, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [1024, 4])  # 4 splits the 3 x 5 positions unevenly
def test_token_logprobs_match_naive_values_and_gradients(temperature, chunk):
    logits = (torch.randn(3, 5, 11) * 3).requires_grad_()
    labels = torch.randint(0, 11, (3, 5))
    ours = token_logprobs(logits, labels, temperature, chunk=chunk)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    ref = naive_logprobs(logits, labels, temperature)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


def test_token_logprobs_hand_computed_and_ignore_index():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0]]])  # p = [1/2, 1/2], [3/4, 1/4]
    out = token_logprobs(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(out, torch.tensor([[math.log(0.5), math.log(0.75)]]))
    assert token_logprobs(logits, torch.tensor([[-100, 1]]))[0, 0].item() == 0.0


def test_bfloat16_logits_are_upcast():
    logits = torch.randn(2, 4, 50).to(torch.bfloat16)
    labels = torch.randint(0, 50, (2, 4))
    out = token_logprobs(logits, labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, naive_logprobs(logits, labels))


def test_entropy_matches_naive_and_known_values():
    logits = torch.randn(2, 3, 7) * 2
    p = torch.softmax(logits / 0.5, -1)
    naive = -(p * p.log()).sum(-1)
    torch.testing.assert_close(entropy_from_logits(logits, 0.5, chunk=4), naive)
    assert entropy_from_logits(torch.zeros(4, 8)).allclose(torch.full((4,), math.log(8)))  # uniform: log V
    assert entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]])).item() < 1e-6  # near one-hot: 0
    # [p = 3/4, 1/4]: H = -(3/4 log 3/4 + 1/4 log 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy_from_logits(torch.tensor([math.log(3), 0.0])).item() == pytest.approx(h)


def test_zero_temperature_is_a_value_error_naming_no_config_key():
    """Pure math raises ValueError; the RL stage names rollout.temperature (test_rl_errors)."""
    with pytest.raises(ValueError, match="temperature > 0") as err:
        token_logprobs(torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), temperature=0.0)
    assert "rollout" not in str(err.value)


@pytest.mark.parametrize(("temperature", "with_bias", "chunk"), [(1.0, False, 1024), (0.7, True, 3)])
def test_linear_logprobs_match_the_head_then_log_softmax(temperature, with_bias, chunk):
    torch.manual_seed(0)
    hidden = torch.randn(10, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True) if with_bias else None
    labels = torch.randint(0, 50, (10,))
    coef = torch.randn(10)  # an arbitrary upstream gradient
    inputs = [hidden, weight] + ([bias] if with_bias else [])

    logp, entropy = linear_logprobs(hidden, weight, bias, labels, temperature, chunk=chunk)
    ours = torch.autograd.grad((logp * coef).sum(), inputs)
    logits = torch.nn.functional.linear(hidden, weight, bias) / temperature
    naive = torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    expected = torch.autograd.grad((naive * coef).sum(), inputs)

    torch.testing.assert_close(logp, naive, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, entropy_from_logits(logits.detach()), rtol=1e-5, atol=1e-5)
    assert entropy.requires_grad  # for an entropy bonus; its gradient: tests/unit/test_rl_entropy_bonus.py
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_linear_logprobs_under_bf16_autocast_match_the_plain_head():
    torch.manual_seed(0)
    hidden = torch.randn(6, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    labels = torch.randint(0, 40, (6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, _ = linear_logprobs(hidden, weight, None, labels)
        naive = token_logprobs(torch.nn.functional.linear(hidden, weight), labels)
    torch.testing.assert_close(logp, naive, rtol=1e-5, atol=1e-5)  # the same bf16 matmul, then float32
    (grad_ours,) = torch.autograd.grad(logp.sum(), [weight])
    (grad_naive,) = torch.autograd.grad(naive.sum(), [weight])
    assert grad_ours.dtype == weight.dtype
    torch.testing.assert_close(grad_ours, grad_naive, rtol=2e-2, atol=2e-2)
