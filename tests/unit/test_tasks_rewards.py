"""The built-in tasks' rewards (r1lab.rewards.tasks) on hand-written completions, right and wrong."""

from __future__ import annotations

from fractions import Fraction

import pytest

from r1lab.config import RewardSpec
from r1lab.rewards import RewardRunner
from r1lab.rewards.tasks import (
    answer_format_reward,
    arithmetic_reward,
    countdown_reward,
    evaluate_expression,
    ordering_reward,
)
from r1lab.tasks import extract_answer, has_answer_line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps\nAnswer: 42", "42"),
        ("Answer: 1\nmore\nanswer:  7 ", "7"),  # the last answer line wins
        ("**Answer:** 12.", "12"),
        ("The answer is 42", None),
        ("Answer:", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_has_answer_line_wants_it_last():
    assert has_answer_line("a\nAnswer: 3\n\n")
    assert not has_answer_line("Answer: 3\nthen I kept talking")
    assert not has_answer_line("")


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("1 + 2 = 3\nAnswer: 843", 1.0),
        ("Answer: 8,43", 1.0),
        ("Answer: 842", 0.0),
        ("Answer: 843 apples", 0.0),
        ("843", 0.0),  # no answer line
    ],
)
def test_arithmetic(completion, reward):
    assert arithmetic_reward(completion, prompt="", answer="843") == reward


def test_evaluate_expression_is_exact_and_safe():
    assert evaluate_expression("(25 - 5) * 3") == (Fraction(60), [25, 5, 3])
    assert evaluate_expression("7 / 2 * 2") == (Fraction(7), [7, 2, 2])  # exact fractions, no rounding
    for bad in (
        "__import__('os').system('true')",
        "2 ** 10",
        "-3 + 5",
        "x + 1",
        "1 / 0",
        "3.5 + 1",
        "(",
        "1" * 300,
    ):
        assert evaluate_expression(bad) is None


@pytest.mark.parametrize(
    ("answer", "reward"),
    [
        ("(25 - 5) * 3", 1.0),
        ("3 * (25 - 5) = 60", 1.0),  # "expr = target" accepted
        ("25 * 3 - 15", 0.0),  # 15 is not given
        ("(25 - 5) * 3 * 1", 0.0),
        ("20 * 3", 0.0),  # 20 not given
        ("25 + 25 + 10", 0.0),  # 25 used twice
        ("25 + 5 * 3", 0.0),  # uses the numbers but makes 40
        ("sixty", 0.0),
    ],
)
def test_countdown(answer, reward):
    completion = f"some steps\nAnswer: {answer}"
    assert countdown_reward(completion, prompt="", numbers=[25, 5, 3], target=60) == reward


def test_countdown_reads_csv_style_columns():
    assert countdown_reward("Answer: 25 * 3 - 5", prompt="", numbers="25, 5, 3", target="70") == 1.0


@pytest.mark.parametrize(
    ("answer", "reward"),
    [
        ("7, 19, 42, 88", 1.0),
        ("7, 42, 19, 88", 0.5),
        ("88, 42, 19, 7", 0.0),
        ("7, 19", 0.5),
        ("7, 19, 42, 88, 99", 0.8),  # an extra number is a wrong position
        ("7 19 42 88", 1.0),
    ],
)
def test_ordering_partial_credit(answer, reward):
    assert ordering_reward(f"Answer: {answer}", prompt="", answer="7, 19, 42, 88") == pytest.approx(reward)


def test_answer_format():
    assert answer_format_reward("x\nAnswer: 5", prompt="") == 1.0
    assert answer_format_reward("x = 5", prompt="") == 0.0


def test_runner_scores_task_rewards_and_names_missing_columns():
    from r1lab.errors import UserError

    runner = RewardRunner([RewardSpec(name="countdown"), RewardSpec(name="answer_format", weight=0.5)])
    batch = runner.score(
        ["Answer: (25 - 5) * 3", "Answer: 25 + 5 + 3", "no answer"],
        ["p"] * 3,
        [{"numbers": [25, 5, 3], "target": 60, "completion": "gold steps", "answer": "(25 - 5) * 3"}] * 3,
    )
    assert batch.total.tolist() == [1.5, 0.5, 0.0]
    with pytest.raises(UserError, match="target"):
        runner.check_columns({"numbers", "answer", "prompt"})
