"""The `ranking` reward: NDCG@k of a listwise ranking, hand-computed, cross-checked against scikit-learn's
ndcg_score, and the stated handling of unknown, repeated and missing ids."""

from __future__ import annotations

import math
import random

import pytest

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import load_reward
from r1lab.rewards.ranking import ndcg_at_k, parse_ranking

REL = [0, 2, 1]  # passage [1] not relevant, [2] grade 2, [3] grade 1
IDCG = 2 + 1 / math.log2(3)


def score(completion: str, kwargs: dict | None = None, relevance=REL) -> float | None:
    reward = load_reward(RewardSpec(name="ranking", kwargs=kwargs or {}))
    return reward(completion, prompt="q", relevance=relevance)


CASES = [
    ("[2] > [3] > [1]", {}, 1.0),
    ("[3] > [1] > [2]", {}, (1 + 0 + 2 / 2) / IDCG),  # 0.7602
    ("[3] > [1] > [2]", {"gain": "exponential"}, (1 + 0 + 3 / 2) / (3 + 1 / math.log2(3))),  # 0.6885
    ("[3] > [1] > [2]", {"k": 1}, 1 / 2),
    ("[3] > [3] > [2]", {}, (1 + 2 / math.log2(3)) / IDCG),  # the repeat counts once: 0.8597, not 1.0
    ("[9] > [2] > [3]", {}, 1.0),  # [9] is no candidate: dropped, takes no position
    ("[3]", {}, 1 / IDCG),  # [1] and [2] left out: not appended, earn nothing (0.3801)
    ("2 > 3 > 1", {}, 1.0),  # bare ids
    ("<think>[1] is off-topic, [2] answers it</think><answer>[2] > [3] > [1]</answer>", {}, 1.0),
    ("[1] looks weak.\nAnswer: [3] > [2] > [1]", {}, (1 + 2 / math.log2(3)) / IDCG),
    ("I cannot rank these.", {}, 0.0),
    ("[7] > [8]", {}, 0.0),  # no candidate id at all
]


@pytest.mark.parametrize(("completion", "kwargs", "expected"), CASES)
def test_ndcg_hand_computed(completion: str, kwargs: dict, expected: float) -> None:
    assert score(completion, kwargs) == pytest.approx(expected)


def test_mapping_relevance_and_nothing_relevant() -> None:
    assert score("[3] > [1] > [2]", relevance={"1": 0, "2": 2, "3": 1}) == pytest.approx(2 / IDCG)
    assert score("[3] > [1] > [2]", relevance={"1": 0, "2": 0}) is None
    assert score("[3] > [1] > [2]", relevance=None) is None


def test_parses_and_raw_ids() -> None:
    reward = load_reward(RewardSpec(name="ranking"))
    assert reward.fn.parses("[2] > [2] > [5]") and not reward.fn.parses("no ranking here")
    assert parse_ranking("[2] > [2] > [ 5 ]") == [2, 2, 5]


def test_matches_sklearn_ndcg_score_on_random_permutations() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 12)
        grades = [rng.choice([0, 0, 1, 2, 3]) for _ in range(n)]
        if not any(grades):
            continue
        order = rng.sample(range(1, n + 1), n)
        k = rng.randint(1, n)
        y_score = [0.0] * n
        for pos, i in enumerate(order):
            y_score[i - 1] = float(n - pos)  # higher score = ranked earlier
        expected = metrics.ndcg_score([grades], [y_score], k=k)
        ranking = " > ".join(f"[{i}]" for i in order)
        assert score(ranking, {"k": k}, relevance=grades) == pytest.approx(expected)
        assert ndcg_at_k(order, dict(enumerate(grades, 1)), k) == pytest.approx(expected)


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": "10"}, {"gain": "log"}])
def test_bad_options_fail_at_load(kwargs: dict) -> None:
    with pytest.raises(UserError):
        load_reward(RewardSpec(name="ranking", kwargs=kwargs))
