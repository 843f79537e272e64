"""KL estimators against hand-computed values and their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.kl import KL_ESTIMATORS, kl_penalty
from r1lab.errors import UserError

LOGP = [0.0, -1.0, -2.0]
REF = [0.0, -2.0, -1.0]  # log r = ref - logp = [0, -1, 1]


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ("k1", [0.0, 1.0, -1.0]),
        ("k2", [0.0, 0.5, 0.5]),
        ("k3", [0.0, math.exp(-1), math.e - 2]),  # e^lr - lr - 1
    ],
)
def test_estimators_hand_computed(estimator, expected):
    out = kl_penalty(torch.tensor(LOGP), torch.tensor(REF), estimator)
    torch.testing.assert_close(out, torch.tensor(expected))


def test_k3_gradient_flows_to_logp_only():
    logp = torch.tensor(LOGP, requires_grad=True)
    ref = torch.tensor(REF, requires_grad=True)
    kl_penalty(logp, ref, "k3").sum().backward()
    # d/dlogp [e^(ref-logp) - (ref-logp) - 1] = 1 - e^(ref-logp)
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 1 - math.exp(-1), 1 - math.e]))
    assert ref.grad is None


def test_k3_and_k2_are_non_negative_and_zero_at_equality():
    logp, ref = torch.randn(100), torch.randn(100)
    for name in ("k2", "k3"):
        assert (kl_penalty(logp, ref, name) >= 0).all()
        torch.testing.assert_close(kl_penalty(logp, logp, name), torch.zeros(100))


def test_k3_stays_finite_far_off_policy():
    out = kl_penalty(torch.tensor([-200.0, 0.0]), torch.tensor([0.0, -200.0]), "k3")
    assert torch.isfinite(out).all()


def test_unknown_estimator_lists_the_known_ones():
    assert KL_ESTIMATORS.names() == ["k1", "k2", "k3"]
    with pytest.raises(UserError, match="k1, k2, k3"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")
