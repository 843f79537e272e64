"""SFT losses against values worked out by hand on a 3-token vocabulary."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.sft_losses import SFT_LOSSES

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def test_nll_is_the_summed_target_nll_worked_out_by_hand() -> None:
    # [B=2, T=2, V=3]; each row's softmax and -log p(label):
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [LN2, 0.0, 0.0]],  # p = 1/3 each -> label 1: ln 3 = 1.0986123 | label ignored
            [[LN3, 0.0, 0.0], [0.0, LN4, 0.0]],  # p = 3/5, 1/5, 1/5 -> label 0: ln 5/3 = 0.5108256
        ]  #                                       p = 1/6, 4/6, 1/6 -> label 2: ln 6 = 1.7917595
    )
    labels = torch.tensor([[1, -100], [0, 2]])
    loss, count = SFT_LOSSES.get("nll")(logits, labels)
    assert count.item() == 3  # the -100 position is no target
    # a sum, not a mean: ln 30 = 3.4011974
    assert loss.item() == pytest.approx(1.0986123 + 0.5108256 + 1.7917595, abs=1e-6)


def test_nll_of_bf16_logits_is_computed_in_float32() -> None:
    # Integer logits are exact in bf16: [2, 0, 0] -> p(0) = e^2 / (e^2 + 2), -log p = ln(1 + 2 e^-2) = 0.2395448;
    # [0, 0, 0] -> ln 3 = 1.0986123
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    loss, count = SFT_LOSSES.get("nll")(logits, torch.tensor([0, 1]))
    assert loss.dtype == torch.float32 and count.item() == 2
    assert loss.item() == pytest.approx(0.2395448 + 1.0986123, abs=1e-6)  # no bf16 rounding (8 bits: ~4e-3)
