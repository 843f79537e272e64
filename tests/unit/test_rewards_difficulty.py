"""Dense partial credit for Countdown (`countdown_partial`) and the difficulty weight (`difficulty_weighted`), on
hand-computed cases, through the reward runner as an RL stage calls it, and what the weight does to advantages."""

from __future__ import annotations

import pytest
import torch

from r1lab.algorithms.advantages import dr_grpo, grpo
from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import REWARDS, RewardRunner, load_reward

ROW = {"numbers": [3, 5, 7], "target": 22, "difficulty": 3}  # 3 * 5 + 7 = 22


def partial(answer: str, **kwargs) -> float:
    return REWARDS.get("countdown_partial")(f"steps\nAnswer: {answer}", **ROW, **kwargs)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("3 * 5 + 7", 1.0),  # right: as `countdown`
        ("3 * 5 + 7 = 22", 1.0),
        ("3 * 7 + 5", 0.1 + 0.4 * (1 - 4 / 22)),  # 26: a valid expression, 4 away
        ("5 + 7", 0.1 + 0.4 * (1 - 10 / 22)),  # 12: numbers may stay unused
        ("3 * 5 * 7", 0.1),  # 105: further than the target itself, closeness 0
        ("3 * 5 + 8", 0.1),  # 8 is not given
        ("7 * 3 + 7", 0.1),  # 7 used twice
        ("three", 0.1),  # an answer line, no expression
    ],
)
def test_countdown_partial_by_hand(answer, expected):
    assert partial(answer) == pytest.approx(expected)


def test_countdown_partial_without_answer_line_and_own_credits():
    assert REWARDS.get("countdown_partial")("3 * 5 + 7", **ROW) == 0.0
    assert partial("3 * 7 + 5", format_credit=0.0, near_credit=0.9) == pytest.approx(0.9 * (1 - 4 / 22))
    assert partial("three", format_credit=0.2) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"format_credit": 1.0}, "format_credit must be a number in [0, 1)"),
        ({"near_credit": "high"}, "near_credit must be a number"),
        ({"format_credit": 0.3, "near_credit": 0.2}, "below format_credit"),
    ],
)
def test_countdown_partial_bad_kwargs(kwargs, said):
    with pytest.raises(UserError, match=said.replace("[", r"\[").replace(")", r"\)")):
        load_reward(RewardSpec(name="countdown_partial", kwargs=kwargs))


def weighted(answer: str, **kwargs) -> float | None:
    spec = RewardSpec(name="difficulty_weighted", kwargs={"reward": "countdown_partial", **kwargs})
    return load_reward(spec)(f"Answer: {answer}", prompt="p", **ROW)


def test_difficulty_weighted_by_hand():
    assert weighted("3 * 5 + 7") == 3.0  # reference 1: the difficulty itself
    assert weighted("3 * 5 + 7", reference=4) == pytest.approx(0.75)
    assert weighted("3 * 5 + 7", reference=4, power=2) == pytest.approx(0.5625)
    assert weighted("3 * 7 + 5", reference=6) == pytest.approx(0.5 * (0.1 + 0.4 * (1 - 4 / 22)))
    assert weighted("three", reference=3, reward_kwargs={"format_credit": 0.3}) == pytest.approx(0.3)
    spec = RewardSpec(name="difficulty_weighted", kwargs={"reward": "countdown", "column": "level"})
    assert load_reward(spec)("Answer: 3*5+7", prompt="p", **ROW, level=2) == 2.0
    assert load_reward(spec).columns == {"level", "numbers", "target"}


def test_difficulty_weighted_in_the_runner_with_accuracy_from_countdown():
    specs = [
        RewardSpec(name="difficulty_weighted", kwargs={"reward": "countdown_partial", "reference": 4}),
        RewardSpec(name="countdown", weight=0.0),
    ]
    rows = [dict(ROW), {"numbers": [2, 9], "target": 18, "difficulty": 2}]
    with RewardRunner(specs, isolated=True) as runner:
        runner.check_columns(set(ROW))
        batch = runner.score(["Answer: 3 * 5 + 7", "Answer: 2 * 9"], ["p", "q"], rows)
        with pytest.raises(UserError, match="needs the column 'difficulty'"):
            runner.check_columns({"numbers", "target"})
    assert batch.total.tolist() == pytest.approx([0.75, 0.5])
    assert batch.accuracy.tolist() == [1.0, 1.0] and runner.accuracy_label == "countdown"
    with RewardRunner(specs[:1], isolated=False) as runner:  # a bad difficulty is a failed call, logged
        bad = runner.score(["Answer: 2 * 9"], ["q"], [{"numbers": [2, 9], "target": 18, "difficulty": 0}])
    assert bad.failures["difficulty_weighted"] == 1
    assert "difficulty must be a positive number" in bad.errors[0]["error"]


@pytest.mark.parametrize(
    ("kwargs", "where", "said"),
    [
        ({}, "kwargs.reward", "must name a built-in reward"),
        ({"reward": "countdwn"}, "kwargs.reward", "did you mean 'countdown'"),
        ({"reward": "difficulty_weighted"}, "kwargs.reward", "must name a built-in reward"),
        ({"reward": "countdown_partial", "reward_kwargs": {"format_credit": 2}}, "format_credit", "[0, 1)"),
        ({"reward": "countdown", "reward_kwargs": {"nope": 1}}, "kwargs", "has no option 'nope'"),
        ({"reward": "countdown", "reference": 0}, "kwargs.reference", "must be positive"),
        ({"reward": "countdown", "power": "x"}, "kwargs.power", "must be a number"),
    ],
)
def test_difficulty_weighted_bad_kwargs(kwargs, where, said):
    with pytest.raises(UserError) as e:
        load_reward(RewardSpec(name="difficulty_weighted", kwargs=kwargs))
    assert where in e.value.where and said in e.value.render()


def test_a_per_prompt_weight_cancels_in_grpo_and_scales_dr_grpo():
    """Why the README says to pair the weight with an estimator that does not divide by the group's std."""
    rewards = torch.tensor([1.0, 0.1, 0.3, 0.1, 1.0, 0.5])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    weights = torch.tensor([0.5, 0.5, 0.5, 1.0, 1.0, 1.0])  # group 0 is the easier problem
    assert torch.allclose(grpo(rewards * weights, groups), grpo(rewards, groups), atol=1e-3)  # up to its eps
    assert torch.allclose(dr_grpo(rewards * weights, groups), dr_grpo(rewards, groups) * weights)
