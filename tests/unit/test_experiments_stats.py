"""Paired statistics against hand-computed cases and against scipy / statsmodels (same tests, same numbers)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from r1lab.experiments.stats import (
    arm_stats,
    bootstrap_means,
    compare_to_baseline,
    holm,
    mcnemar_exact,
    paired_stats,
)


def test_mcnemar_hand_computed():
    # b = 3 (arm only), c = 0: p = 2 * P[Bin(3, 1/2) <= 0] = 2/8
    arm, base = [1, 1, 1, 0, 1], [0, 0, 0, 0, 1]
    assert mcnemar_exact(arm, base) == (3, 0, 0.25)
    assert mcnemar_exact(base, arm) == (0, 3, 0.25)
    assert mcnemar_exact([1, 0], [1, 0]) == (0, 0, 1.0)  # no discordant pair: no evidence
    assert mcnemar_exact([1, 0], [0, 1])[2] == 1.0  # 2 * P[Bin(2, 1/2) <= 1] = 1.5, capped at 1


@pytest.mark.parametrize(
    ("b", "c", "both"), [(12, 3, 40), (30, 31, 100), (0, 9, 5), (150, 110, 200), (1, 1, 0)]
)
def test_mcnemar_matches_scipy_and_statsmodels(b, c, both):
    arm = np.array([1] * b + [0] * c + [1] * both + [0] * 7)
    base = np.array([0] * b + [1] * c + [1] * both + [0] * 7)
    got_b, got_c, p = mcnemar_exact(arm, base)
    assert (got_b, got_c) == (b, c)
    assert p == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)
    table = [[both, b], [c, 7]]
    assert p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)


def test_holm_hand_computed_and_statsmodels():
    p = [0.01, 0.04, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, max(0.09, 0.08) = 0.09, max(0.09, 0.5) = 0.5
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = list(rng.uniform(0, 0.2, size=rng.integers(1, 8)))
        assert holm(values) == pytest.approx(list(multipletests(values, method="holm")[1]))


def test_bootstrap_of_two_problems_hand_computed():
    # one seed, problems [1, 0]: resampled means 0, 0.5, 1 with chance 1/4, 1/2, 1/4
    draws = bootstrap_means(np.array([[1.0, 0.0]]), resamples=20_000)
    assert set(np.unique(draws)) == {0.0, 0.5, 1.0}
    assert (draws == 0.5).mean() == pytest.approx(0.5, abs=0.02)
    stats = arm_stats([[1, 0]], resamples=20_000)
    assert stats.interval == (0.0, 1.0)
    assert stats.mean == 0.5 and stats.spread == 0.0


def test_bootstrap_interval_matches_normal_theory_for_many_problems():
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=2000) < 0.3).astype(float)
    stats = arm_stats(x)
    half = 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert stats.interval[0] == pytest.approx(x.mean() - half, abs=0.004)
    assert stats.interval[1] == pytest.approx(x.mean() + half, abs=0.004)


def test_seed_variation_widens_the_interval():
    # every seed solves its own fixed share of the 400 problems; the seeds disagree a lot
    shares = [0.1, 0.3, 0.5]
    x = np.array([[1.0 if p < share * 400 else 0.0 for p in range(400)] for share in shares])
    stats = arm_stats(x)
    assert stats.mean == pytest.approx(0.3)
    assert stats.spread == pytest.approx(0.2)
    one_seed = arm_stats(x[1])
    assert stats.interval[1] - stats.interval[0] > 3 * (one_seed.interval[1] - one_seed.interval[0])
    assert stats.interval[0] < 0.2 and stats.interval[1] > 0.4


def test_paired_difference_one_seed_uses_mcnemar_and_paired_interval():
    base = np.array([0] * 30 + [1] * 50 + [0] * 20)
    arm = np.array([1] * 30 + [1] * 50 + [0] * 20)  # solves 30 more, loses none
    stats = paired_stats(arm, base)
    assert stats.diff == pytest.approx(0.3)
    assert stats.p == pytest.approx(2 * 0.5**30)
    assert stats.per_seed == [(pytest.approx(0.3), 30, 0, pytest.approx(2 * 0.5**30))]
    assert 0.2 < stats.interval[0] < 0.3 < stats.interval[1] < 0.4
    # an arm equal to its baseline: difference 0, interval [0, 0], p = 1
    same = paired_stats(base, base)
    assert (same.diff, same.interval, same.p) == (0.0, (0.0, 0.0), 1.0)


def test_paired_several_seeds_against_an_untrained_baseline_and_holm():
    base = np.zeros(50)  # the base model: one evaluation, broadcast against every seed
    better = np.array([[1.0] * 20 + [0.0] * 30, [1.0] * 25 + [0.0] * 25, [1.0] * 15 + [0.0] * 35])
    noise = np.array([[1.0] * 1 + [0.0] * 49, [0.0] * 50, [0.0] * 50])
    by_seed = {"base": {None: base}, "better": dict(enumerate(better)), "noise": dict(enumerate(noise))}
    out = compare_to_baseline(by_seed, "base")
    assert out["better"].seeds == [0, 1, 2]
    assert out["better"].diff == pytest.approx(0.4)
    assert [round(d, 2) for d, *_ in out["better"].per_seed] == [0.4, 0.5, 0.3]
    assert out["better"].p == 1 / 10_000  # every resample has a positive difference: the floor 1/resamples
    assert out["better"].interval[0] > 0.2
    assert out["noise"].p == 1.0  # half the resamples are 0: no evidence at all
    assert out["better"].p_holm == pytest.approx(min(1.0, 2 * out["better"].p))
    assert out["noise"].p_holm == 1.0


def test_arms_are_paired_on_the_seeds_both_have():
    # an interrupted experiment: the arm has seeds 0 and 2, the baseline 0, 1, 2
    baseline = {0: np.array([1.0, 0, 0, 0]), 1: np.array([1.0, 1, 1, 1]), 2: np.array([0.0, 0, 0, 0])}
    arm = {2: np.array([1.0, 1, 0, 0]), 0: np.array([1.0, 1, 1, 0])}
    out = compare_to_baseline({"b": baseline, "a": arm}, "b")["a"]
    assert out.seeds == [2, 0]
    assert [d for d, *_ in out.per_seed] == [0.5, 0.5]  # seed 1 of the baseline (all solved) is not used
    assert out.diff == 0.5
