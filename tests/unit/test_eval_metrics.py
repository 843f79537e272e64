"""pass@k, maj@k and Wilson intervals against hand-computed values."""

from __future__ import annotations

import math

import pytest

from r1lab.eval.metrics import maj_at_k, majority_correct, pass_at_k, wilson_interval


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 0, 1, 0.0),
        (10, 10, 5, 1.0),
        (10, 3, 1, 0.3),  # pass@1 is the fraction correct
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (6, 1, 6, 1.0),
        (3, 1, 3, 1.0),
        (8, 2, 7, 1.0),  # n - c < k: every draw of 7 holds a correct one
        (8, 2, 6, 1 - math.comb(6, 6) / math.comb(8, 6)),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_binomial_ratio_everywhere():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_rejects_bad_arguments():
    for args in ((5, 6, 1), (5, 1, 0), (5, 1, 6)):
        with pytest.raises(ValueError):
            pass_at_k(*args)


def test_majority_vote_with_ties_and_abstentions():
    assert majority_correct(["4", "4", "5"], [True, True, False]) == 1.0
    assert majority_correct(["5", "5", "4"], [False, False, True]) == 0.0
    assert majority_correct(["4", "5"], [True, False]) == 0.5  # tie broken at random
    assert majority_correct([None, None, "4"], [False, False, True]) == 1.0  # no answer does not vote
    assert majority_correct([None, None], [False, False]) == 0.0


def test_maj_at_k_hand_computed():
    answers, correct = ["a", "a", "b"], [True, True, False]
    assert maj_at_k(answers, correct, 1) == pytest.approx(2 / 3)  # maj@1 = mean accuracy
    # pairs: (a,a) -> 1, (a,b) -> 0.5 twice  => (1 + 0.5 + 0.5) / 3
    assert maj_at_k(answers, correct, 2) == pytest.approx(2 / 3)
    assert maj_at_k(answers, correct, 3) == 1.0
    # right answer once, wrong answer "x" three times: any 3 samples hold at least two x
    assert maj_at_k(["r", "x", "x", "x"], [True, False, False, False], 3) == 0.0
    # maj@2 of (r, x, x, x): pairs with r tie (3 of 6) -> 0.5 each; (x, x) -> 0
    assert maj_at_k(["r", "x", "x", "x"], [True, False, False, False], 2) == pytest.approx(0.25)


def test_maj_at_k_large_n_is_sampled_and_close():
    answers = ["r"] * 30 + ["x"] * 10
    value = maj_at_k(answers, [a == "r" for a in answers], 9)  # C(40, 9) subsets: sampled
    assert value == maj_at_k(answers, [a == "r" for a in answers], 9)  # seeded
    assert 0.9 < value <= 1.0


def test_wilson_interval_hand_computed():
    low, high = wilson_interval(8, 10)
    # p=0.8, z=1.96: centre = (0.8 + 0.19208) / 1.38416 = 0.716738,
    # half = 1.96 * sqrt(0.016 + 0.009604) / 1.38416 = 0.226581
    assert low == pytest.approx(0.490157, abs=1e-5)
    assert high == pytest.approx(0.943319, abs=1e-5)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.277540, abs=1e-5)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    narrow, wide = wilson_interval(250, 500), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
