"""TIS and MIS importance weights (r1lab.algorithms.rollout_correction) on a batch whose log-ratios are chosen
so every weight is known by hand; bad arguments raise ValueError."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.rollout_correction import ROLLOUT_CORRECTIONS, rollout_is_weights

# log(pi_trainer / pi_sampler) per token; row 0 has 3 tokens, row 1 has 2 (the rest is padding)
LOG_R = torch.tensor([[0.1, -0.2, 0.9, 5.0], [math.log(3.0), -math.log(4.0), 7.0, 7.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
SAMPLER = torch.full((2, 4), -1.5)
E = math.exp


def weights(mode, level, upper, lower=None):
    w, affected = rollout_is_weights(
        SAMPLER + LOG_R, SAMPLER, MASK, mode=mode, level=level, upper=upper, lower=lower
    )
    return w, affected


def test_token_tis_caps_each_ratio():
    w, affected = weights("tis", "token", 2.0)
    torch.testing.assert_close(w, torch.tensor([[E(0.1), E(-0.2), 2.0, 0.0], [2.0, 0.25, 0.0, 0.0]]))
    assert affected.tolist() == [[False, False, True, False], [True, False, False, False]]


def test_sequence_tis_caps_the_product_of_the_row():
    w, affected = weights("tis", "sequence", 2.0)
    # row 0: e^0.8 = 2.23 > 2 (every token truncated); row 1: 3 x 1/4 = 0.75
    torch.testing.assert_close(w, torch.tensor([[2.0, 2.0, 2.0, 0.0], [0.75, 0.75, 0.0, 0.0]]))
    assert affected.tolist() == [[True, True, True, False], [False] * 4]


def test_token_mis_zeroes_ratios_outside_the_bounds():
    w, affected = weights("mis", "token", 2.0, 0.5)
    torch.testing.assert_close(w, torch.tensor([[E(0.1), E(-0.2), 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert affected.tolist() == [[False, False, True, False], [True, True, False, False]]


def test_sequence_mis_masks_whole_rows():
    w, affected = weights("mis", "sequence", 2.0, 0.5)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.75, 0.75, 0.0, 0.0]]))
    assert affected.tolist() == [[True, True, True, False], [False] * 4]


def test_geometric_mis_filters_rows_on_their_geometric_mean():
    # row 0: exp(0.8 / 3) = 1.306 (kept in [0.9, 1.35], weight 1); row 1: sqrt(0.75) = 0.866 < 0.9 (masked)
    w, affected = weights("mis", "geometric", 1.35, 0.9)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert affected.tolist() == [[False] * 4, [True, True, False, False]]
    w, _ = weights("mis", "geometric", 1.3, 0.9)  # 1.306 > 1.3: row 0 masked too
    assert float(w.sum()) == 0.0


def test_weights_carry_no_gradient_and_ignore_padding_values():
    trainer = (SAMPLER + LOG_R).requires_grad_()
    w, _ = rollout_is_weights(trainer, SAMPLER, MASK, mode="tis", level="sequence", upper=10.0)
    assert not w.requires_grad
    # the padding's huge log-ratios (5, 7) do not enter the row products
    torch.testing.assert_close(w[:, 0], torch.tensor([E(0.8), 0.75]))


def test_extreme_ratios_are_clamped_before_exp():
    huge = torch.tensor([[100.0, -100.0]])
    w, _ = rollout_is_weights(huge, torch.zeros(1, 2), torch.ones(1, 2), mode="mis", level="token",
                              upper=1e12, lower=1e-12)  # fmt: skip
    torch.testing.assert_close(w, torch.tensor([[E(20.0), E(-20.0)]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "tis", "level": "token", "upper": 2.0, "lower": 0.5}, "no lower bound"),
        ({"mode": "mis", "level": "token", "upper": 2.0}, "needs a lower bound"),
        ({"mode": "mis", "level": "token", "upper": 2.0, "lower": 3.0}, "0 < lower <= upper"),
        ({"mode": "tis", "level": "token", "upper": 0.0}, "0 < lower <= upper"),
        ({"mode": "tis", "level": "geometric", "upper": 2.0}, "not an importance weight"),
        ({"mode": "mis", "level": "tokens", "upper": 2.0, "lower": 0.5}, "unknown rollout correction level"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rollout_is_weights(SAMPLER + LOG_R, SAMPLER, MASK, **kwargs)


def test_shapes_must_match_and_modes_are_registered():
    with pytest.raises(ValueError, match="must match"):
        rollout_is_weights(SAMPLER, SAMPLER[:1], MASK, mode="tis", level="token", upper=2.0)
    assert set(ROLLOUT_CORRECTIONS.names()) == {"tis", "mis"}
