"""Advantage estimators against hand-computed values: unequal groups, interleaved ids, NaN rewards."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.advantages import ADVANTAGES
from r1lab.errors import UserError

NAN = float("nan")

# group 0: [1, 0, 0, 1] (mean 0.5, Bessel std sqrt(1/3)); group 7: [1, 2, 3] (mean 2, std 1); interleaved
REWARDS = torch.tensor([1.0, 1.0, 0.0, 2.0, 0.0, 1.0, 3.0])
GROUPS = torch.tensor([0, 7, 0, 7, 0, 0, 7])


def adv(name: str, rewards: torch.Tensor = REWARDS, groups: torch.Tensor = GROUPS) -> torch.Tensor:
    return ADVANTAGES.get(name)(rewards, groups)


def test_grpo_hand_computed():
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    b = 1 / (1 + 1e-4)
    expected = torch.tensor([a, -b, -a, 0.0, -a, a, b])
    torch.testing.assert_close(adv("grpo"), expected)


def test_dr_grpo_hand_computed():
    expected = torch.tensor([0.5, -1.0, -0.5, 0.0, -0.5, 0.5, 1.0])
    torch.testing.assert_close(adv("dr_grpo"), expected)


def test_rloo_is_reward_minus_mean_of_the_others():
    # group 0: 1 - (0+0+1)/3 = 2/3, 0 - (1+0+1)/3 = -2/3; group 7: 1 - 2.5, 2 - 2, 3 - 1.5
    expected = torch.tensor([2 / 3, -1.5, -2 / 3, 0.0, -2 / 3, 2 / 3, 1.5])
    torch.testing.assert_close(adv("rloo"), expected)


def test_batch_std_divides_group_centred_rewards_by_the_batch_std():
    # all rewards: Σr = 8, Σr² = 16, n = 7 -> Bessel var = (16 - 64/7) / 6 = 8/7
    std = math.sqrt(8 / 7) + 1e-4
    expected = torch.tensor([0.5, -1.0, -0.5, 0.0, -0.5, 0.5, 1.0]) / std
    torch.testing.assert_close(adv("batch_std"), expected)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "batch_std"])
def test_nan_rewards_get_zero_and_are_left_out_of_group_statistics(name):
    # group 3 all NaN; group 4 [NaN, 1, 3]; group 5 one valid reward; group 6 a single completion
    rewards = torch.tensor([NAN, NAN, NAN, 1.0, 3.0, 5.0, NAN, 4.0])
    groups = torch.tensor([3, 3, 4, 4, 4, 5, 5, 6])
    out = adv(name, rewards, groups)
    assert not torch.isnan(out).any()
    assert out[[0, 1, 2, 5, 6, 7]].eq(0).all()
    # group 4 valid rewards [1, 3]: mean 2, Bessel std sqrt(2); rloo: 1 - 3, 3 - 1
    batch = math.sqrt(8.75 / 3)  # valid rewards [1, 3, 5, 4]: mean 3.25, Σ squared deviations 8.75
    expected = {
        "grpo": 1 / (math.sqrt(2) + 1e-4),
        "dr_grpo": 1.0,
        "rloo": 2.0,
        "batch_std": 1 / (batch + 1e-4),
    }[name]
    torch.testing.assert_close(out[3:5], torch.tensor([-expected, expected]))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "batch_std", "reinforce_pp_baseline", "opo"])
def test_equal_rewards_give_zero_advantage(name):
    out = adv(name, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 1, 1]))
    torch.testing.assert_close(out, torch.zeros(5))


@pytest.mark.parametrize("name", list(ADVANTAGES))
def test_empty_batch_and_dtype(name):
    assert adv(name, torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)
    assert adv(name).dtype == torch.float32
    assert adv(name, REWARDS.double()).dtype == torch.float64


def test_advantages_do_not_depend_on_row_order():
    perm = torch.tensor([6, 2, 0, 5, 1, 4, 3])
    for name in ADVANTAGES:
        torch.testing.assert_close(adv(name, REWARDS[perm], GROUPS[perm]), adv(name)[perm])


def test_unknown_estimator_lists_the_known_ones():
    with pytest.raises(UserError) as err:
        ADVANTAGES.get("ppo_gae")
    assert "batch_std, dr_grpo, grpo, opo, reinforce_pp, reinforce_pp_baseline, rloo" in str(err.value)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="equal length"):
        adv("grpo", torch.zeros(3), torch.zeros(2, dtype=torch.long))


# REINFORCE++: whitening over tokens. Lengths per row; token-weighted statistics written out in plain Python.
LENGTHS = torch.tensor([2.0, 1.0, 1.0, 3.0, 0.0, 1.0, 2.0])  # row 4 has no loss token (mask_truncated)


def whitened(values: list[float], weights: list[float]) -> list[float]:
    n = sum(weights)
    mean = sum(w * v for v, w in zip(values, weights, strict=True)) / n
    var = sum(w * (v - mean) ** 2 for v, w in zip(values, weights, strict=True)) / (n - 1)
    return [(v - mean) / math.sqrt(var + 1e-8) for v in values]


def test_reinforce_pp_whitens_rewards_over_the_tokens_of_the_batch():
    # 10 tokens: mean (2·1 + 1 + 0 + 3·2 + 0 + 1 + 2·3) / 10 = 1.6; Σ w (r - 1.6)^2 = 8.4, / 9
    expected = [(r - 1.6) / math.sqrt(8.4 / 9 + 1e-8) for r in REWARDS.tolist()]
    assert whitened(REWARDS.tolist(), LENGTHS.tolist()) == pytest.approx(expected)
    torch.testing.assert_close(
        ADVANTAGES.get("reinforce_pp")(REWARDS, GROUPS, lengths=LENGTHS), torch.tensor(expected)
    )
    # without lengths every completion counts once: the batch mean 8/7 and Bessel std sqrt(8/7)
    plain = [(r - 8 / 7) / math.sqrt(8 / 7 + 1e-8) for r in REWARDS.tolist()]
    torch.testing.assert_close(adv("reinforce_pp"), torch.tensor(plain))


def test_reinforce_pp_baseline_centres_on_the_group_mean_then_whitens():
    centred = [0.5, -1.0, -0.5, 0.0, -0.5, 0.5, 1.0]  # dr_grpo's r - group mean
    expected = whitened(centred, LENGTHS.tolist())
    out = ADVANTAGES.get("reinforce_pp_baseline")(REWARDS, GROUPS, lengths=LENGTHS)
    torch.testing.assert_close(out, torch.tensor(expected))


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline"])
def test_reinforce_pp_leaves_nan_rewards_out(name):
    rewards = torch.tensor([1.0, NAN, 0.0, 2.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    lengths = torch.tensor([1.0, 5.0, 2.0, 1.0, 1.0])
    out = ADVANTAGES.get(name)(rewards, groups, lengths=lengths)
    keep = [0, 2, 3, 4]
    centred = [1.0, 0.0, 2.0, 0.0] if name == "reinforce_pp" else [0.5, -0.5, 1.0, -1.0]
    assert out[1].item() == 0.0
    torch.testing.assert_close(out[keep], torch.tensor(whitened(centred, [1.0, 2.0, 1.0, 1.0])))


def test_opo_subtracts_the_length_weighted_group_mean():
    # group 0 rows 0, 2, 4, 5: rewards 1, 0, 0, 1 with lengths 2, 1, 0, 1 -> baseline (2 + 1) / 4 = 0.75
    # group 7 rows 1, 3, 6: rewards 1, 2, 3 with lengths 1, 3, 2 -> baseline (1 + 6 + 6) / 6 = 13/6
    expected = [1 - 0.75, 1 - 13 / 6, -0.75, 2 - 13 / 6, -0.75, 1 - 0.75, 3 - 13 / 6]
    out = ADVANTAGES.get("opo")(REWARDS, GROUPS, lengths=LENGTHS)
    torch.testing.assert_close(out, torch.tensor(expected))
    torch.testing.assert_close(adv("opo"), adv("dr_grpo"))  # without lengths: the plain group mean
