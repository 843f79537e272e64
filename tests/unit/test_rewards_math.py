"""The `math` and `numeric` rewards against tables of completions and gold answers."""

from __future__ import annotations

import pytest

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import REWARDS, load_reward

MATH_CASES = [
    # (completion, gold, expected)
    (r"So the result is \boxed{\frac{1}{2}}.", "1/2", 1.0),  # latex fraction vs plain fraction
    (r"\boxed{0.5}", r"\frac12", 1.0),  # decimal vs bare latex gold
    (r"$\dfrac{3}{4}$", "0.75", 1.0),
    (r"\boxed{\frac{2}{4}}", "1/2", 1.0),  # unreduced fraction
    (r"\boxed{0.333}", "1/3", 0.0),  # a rounded decimal is not the fraction
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),  # symbolic equivalence
    (r"\boxed{\pi/2}", r"\frac{\pi}{2}", 1.0),
    (r"\boxed{5 \text{ cm}}", "5", 1.0),  # units dropped
    ("The answer is 5 cm.", "5", 1.0),
    (r"The final answer is 10\%", "10%", 1.0),  # percent
    ("Answer: 1,000", "1000", 1.0),  # thousands separator
    ("Answer: -2", "-2", 1.0),
    ("Answer: 2", "-2", 0.0),  # sign matters
    (r"\boxed{x = 2}", "2", 1.0),  # an assignment's value
    (r"\boxed{(1, 2)}", "(1,2)", 1.0),  # interval / tuple
    (r"\boxed{\{1,2\}}", r"\{2,1\}", 1.0),  # sets ignore order
    (r"First \boxed{3}, wait, no: \boxed{4}", "4", 1.0),  # the last box counts
    (r"First \boxed{3}, wait, no: \boxed{4}", "3", 0.0),
    ("<think>3 + 4 = 7</think><answer>7</answer>", "7", 1.0),  # <answer> block
    (r"<think>maybe \boxed{6}</think><answer>7</answer>", "6", 0.0),  # only the <answer> block is read
    ("12 apples and then 5 more, so 17", "17", 1.0),  # last number, no anchor
    ("She has 48 / 2 = 24 clips.", "Natalia sold 48/2 = 24 clips in May.\n#### 24", 1.0),  # GSM8K gold
    ("I don't know", "3", 0.0),  # no answer at all
    ("", "3", 0.0),  # empty completion
    (r"so x^2 = \boxed{", "3", 0.0),  # cut off inside the box
    ("blue", "Blue", 1.0),  # gold that is not math: normalised text
    ("it is red", "blue", 0.0),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), MATH_CASES)
def test_math_table(completion: str, gold: str, expected: float) -> None:
    assert REWARDS.get("math")(completion, prompt="q", answer=gold) == expected


# (gold, a right answer, what math-verify's plain-expression parser reads of the bare gold): the truncated
# reading must score 0 and the right answer 1, whether the gold is bare or wrapped in $...$.
ALGEBRAIC_GOLDS = [
    ("2x", r"\boxed{2x}", r"\boxed{2}"),
    ("1+2x", r"\boxed{2x+1}", r"\boxed{1}"),
    (r"3\sqrt{2}", r"\boxed{\sqrt{18}}", r"\boxed{3}"),
    (r"\frac{1}{2}x", r"\boxed{x/2}", r"\boxed{\frac{1}{2}}"),
    ("2x+3", r"\boxed{3+2x}", r"\boxed{2}"),
    (r"2\pi", r"\boxed{2\pi}", r"\boxed{2}"),
    (r"2\sqrt{3}/3", r"\boxed{\frac{2}{\sqrt{3}}}", r"\boxed{2}"),
    ("y=2x+1", r"\boxed{y = 1 + 2x}", r"\boxed{2}"),
    ("x^2-2x+1", r"\boxed{(x-1)^2}", r"\boxed{x^2}"),
    ("10^{-3}", r"\boxed{0.001}", r"\boxed{10}"),
    ("4!", r"\boxed{24}", r"\boxed{4}"),
    ("1:2", r"\boxed{1/2}", r"\boxed{1}"),
    ("[1, 3)", r"\boxed{[1,3)}", r"\boxed{3}"),
    ("1, 2, 3", r"\boxed{3, 2, 1}", r"\boxed{3}"),
    ("2*x", "Answer: 2x", "Answer: 2"),
    ("2x", "The answer is 2x", "The answer is 2"),  # an answer line is read whole too
]


@pytest.mark.parametrize(("gold", "right", "truncated"), ALGEBRAIC_GOLDS)
@pytest.mark.parametrize("wrap", ["{}", "${}$"])
def test_math_reads_algebraic_golds_whole(gold: str, right: str, truncated: str, wrap: str) -> None:
    math = REWARDS.get("math")
    assert math(right, prompt="q", answer=wrap.format(gold)) == 1.0
    assert math(truncated, prompt="q", answer=wrap.format(gold)) == 0.0


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (r"\boxed{12}", "12 dollars", 1.0),  # a number with a unit word is the number
        (r"\boxed{3}", "3 hours", 1.0),
        (r"\boxed{12}", "$12", 1.0),  # a currency sign, not a delimiter
        ("The answer is 2 and 3", "2x", 0.0),
        (r"\boxed{0.001}", "1e-3", 1.0),  # a bare gold in e-notation (inside $...$ it would be 1*e - 3)
        (r"\boxed{1}", "1e-3", 0.0),
    ],
)
def test_math_bare_gold_edge_cases(completion: str, gold: str, expected: float) -> None:
    assert REWARDS.get("math")(completion, prompt="q", answer=gold) == expected


def test_math_gives_up_on_a_pathological_answer() -> None:
    # sympy would try to evaluate a tower of powers for a very long time; math-verify's timeout stops it
    tower = load_reward(RewardSpec(name="math", kwargs={"timeout": 1}))
    assert tower(r"\boxed{9^{9^{9^{9}}}}", prompt="q", answer="3") == 0.0


def test_math_without_gold_is_not_applicable() -> None:
    assert REWARDS.get("math")(r"\boxed{3}", prompt="q", answer=None) is None
    assert REWARDS.get("math")(r"\boxed{3}", prompt="q", answer="") is None


def test_math_accepts_a_list_of_golds() -> None:
    math = REWARDS.get("math")
    assert math(r"\boxed{0.5}", prompt="q", answer=["1/3", r"\frac{1}{2}"]) == 1.0
    assert math(r"\boxed{0.25}", prompt="q", answer=["1/3", "1/2"]) == 0.0
    assert math(r"\boxed{1}", prompt="q", answer=[]) is None


def test_math_reads_another_column_and_int_gold() -> None:
    fn = load_reward(RewardSpec(name="math", kwargs={"answer_key": "solution"}))
    assert fn.columns == {"solution"}
    assert fn(r"\boxed{42}", prompt="q", solution=42) == 1.0


def test_math_timeout_kwarg_is_checked_at_load() -> None:
    with pytest.raises(UserError, match="timeout"):
        load_reward(RewardSpec(name="math", kwargs={"timeout": 0.5}))


NUMERIC_CASES = [
    # (completion, gold, kwargs, expected)
    ("Answer: 3.14159", "3.14159", {}, 1.0),
    ("Answer: 3.14", "3.14159", {}, 0.0),
    ("Answer: 3.14", "3.14159", {"tol": 0.01}, 1.0),
    ("Answer: 101", "100", {"rel_tol": 0.02}, 1.0),
    ("Answer: 103", "100", {"rel_tol": 0.02}, 0.0),
    (r"\boxed{\frac{3}{4}}", "0.75", {}, 1.0),
    ("<answer>3/4</answer>", "0.75", {}, 1.0),
    ("The total is $1,234.50 in all", "1234.5", {}, 1.0),  # last number, currency and separators
    ("Answer: 45%", "45", {}, 1.0),
    ("Answer: -7", "7", {}, 0.0),
    ("Answer: 1e-3", "0.001", {}, 1.0),
    ("no number here", "5", {}, 0.0),
    ("the steps: 2, 3, then 9", "9", {}, 1.0),
]


@pytest.mark.parametrize(("completion", "gold", "kwargs", "expected"), NUMERIC_CASES)
def test_numeric_table(completion: str, gold: str, kwargs: dict, expected: float) -> None:
    fn = load_reward(RewardSpec(name="numeric", kwargs=kwargs))
    assert fn(completion, prompt="q", answer=gold) == expected


def test_numeric_gold_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="not a number"):
        REWARDS.get("numeric")("Answer: 3", prompt="q", answer="three")
    assert REWARDS.get("numeric")("Answer: 3", prompt="q", answer=None) is None


def test_numeric_negative_tolerance_is_a_user_error() -> None:
    with pytest.raises(UserError, match="tol"):
        load_reward(RewardSpec(name="numeric", kwargs={"tol": -1}))
