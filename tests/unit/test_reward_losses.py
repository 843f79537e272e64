"""Reward-model losses and metrics against hand-computed values (and sklearn's AUC where installed)."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.reward_losses import REWARD_LOSSES, auc, bce, bradley_terry, ece
from r1lab.errors import UserError


def test_bce_by_hand() -> None:
    r, y = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0])
    expected = [math.log(2), math.log(1 + math.e**2), math.log(1 + math.e**-1)]
    assert bce(r, y).tolist() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_by_hand() -> None:
    chosen, rejected = torch.tensor([1.0, 0.0, 3.0]), torch.tensor([0.0, 1.0, 3.0])
    expected = [math.log(1 + math.e**-1), math.log(1 + math.e), math.log(2)]
    assert bradley_terry(chosen, rejected).tolist() == pytest.approx(expected, rel=1e-6)


def test_losses_refuse_mismatched_shapes_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        bce(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="differ in shape"):
        bradley_terry(torch.zeros(3), torch.zeros(1, 3))
    assert REWARD_LOSSES.get("bce") is bce
    with pytest.raises(UserError, match="did you mean 'bradley_terry'"):
        REWARD_LOSSES.get("bradley-terry")


def test_auc_by_hand() -> None:
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of the 4 (pos, neg) pairs ordered right
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # ties count one half: positive 0.5 ties both negatives (1), positive 0.9 beats both (2)
    assert auc(torch.tensor([0.5, 0.5, 0.5, 0.9]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.75)
    assert auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 1, 0])) == 1.0
    assert auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0, 0, 1])) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        auc(torch.tensor([0.2, 0.3]), torch.tensor([1, 1]))


def test_auc_matches_sklearn_with_ties() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 12, (200,), generator=gen).float() / 4  # many ties
    labels = torch.randint(0, 2, (200,), generator=gen)
    assert auc(scores, labels) == pytest.approx(
        metrics.roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12
    )


def test_ece_by_hand() -> None:
    probs, labels = torch.tensor([0.05, 0.15, 0.95, 0.95]), torch.tensor([0, 1, 1, 0])
    # bins: [0, .1) gap .05; [.1, .2) gap .85; [.9, 1] two rows, mean label .5 vs .95: .45 x 2
    assert ece(probs, labels) == pytest.approx((0.05 + 0.85 + 0.9) / 4)
    assert ece(torch.tensor([1.0, 0.0]), torch.tensor([1, 0])) == 0.0  # p = 1 falls in the last bin
    assert ece(torch.tensor([0.7] * 10), torch.tensor([1] * 7 + [0] * 3)) == pytest.approx(0.0, abs=1e-6)
