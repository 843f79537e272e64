"""The `exact`, `choice`, `classification`, `format` and `overlong` rewards against tables of cases."""

from __future__ import annotations

import pytest

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import REWARDS, load_reward


def score(name: str, completion: str, kwargs: dict | None = None, **columns) -> float | None:
    return load_reward(RewardSpec(name=name, kwargs=kwargs or {}))(completion, prompt="q", **columns)


EXACT_CASES = [
    ("Answer: Paris", "Paris", 1.0),
    ("Answer: paris.", "Paris", 1.0),  # case and final period
    ("<answer>  New   York </answer>", "new york", 1.0),  # spaces
    (r"\boxed{\text{yes}}", "yes", 1.0),
    ("I think it is London.\nLondon", "London", 1.0),  # last line when nothing marks the answer
    ("Answer: Lyon", "Paris", 0.0),
    ("Answer: Paris, France", "Paris", 0.0),
    ("Answer: NYC", ["New York", "NYC"], 1.0),  # a list of accepted answers
]


@pytest.mark.parametrize(("completion", "gold", "expected"), EXACT_CASES)
def test_exact_table(completion: str, gold, expected: float) -> None:
    assert score("exact", completion, answer=gold) == expected


def test_exact_case_sensitive_and_missing_gold() -> None:
    assert score("exact", "Answer: paris", {"case_sensitive": True}, answer="Paris") == 0.0
    assert score("exact", "Answer: Paris", answer=None) is None


CHOICE_CASES = [
    ("The answer is (B).", "B", 1.0),
    ("Answer: c", "C", 1.0),
    ("answer: **D**", "D", 1.0),
    ("<answer>B</answer>", "(B)", 1.0),  # gold written with parentheses
    (r"\boxed{A}", "A", 1.0),
    ("B) 42", "B", 1.0),  # the completion is just the option
    ("A careful look rules out (A) and (C); it must be (D).", "D", 1.0),  # last parenthesised option
    ("A cat is not a dog, so C", "C", 1.0),  # "A" as an article is not a choice
    ("The answer is a bit unclear, but B", "B", 1.0),  # "a" as an article after "answer is"
    ("The answer is B because A fails", "B", 1.0),
    ("The answer is (B).", 1, 1.0),  # 0-based index gold
    ("The answer is (B).", "C", 0.0),
    ("I cannot decide.", "A", 0.0),  # no option at all
]


@pytest.mark.parametrize(("completion", "gold", "expected"), CHOICE_CASES)
def test_choice_table(completion: str, gold, expected: float) -> None:
    assert score("choice", completion, answer=gold) == expected


def test_choice_options_and_bad_gold() -> None:
    assert score("choice", "The answer is G", {"options": "ABCDEFGHIJ"}, answer="G") == 1.0
    with pytest.raises(ValueError, match="not one of the options"):
        score("choice", "Answer: A", answer="Z")
    with pytest.raises(UserError, match="options"):
        load_reward(RewardSpec(name="choice", kwargs={"options": "ab"}))


CLASSIFICATION_CASES = [
    # (completion, gold, kwargs, expected)
    ("<think>feathers, beak</think><answer>Bird</answer>", "bird", {}, 1.0),
    ("<think>fur</think><answer>cat</answer>", "bird", {}, 0.0),
    ("golden retriever", "Golden Retriever", {}, 1.0),  # no-think variant: the whole completion
    ("It is a golden retriever", "golden retriever", {}, 0.0),  # no partial credit
    ("<answer>7</answer>", "7.0", {}, 1.0),  # numeric class names compare as numbers
    ("bird", "bird", {"require_tags": True}, 0.0),  # the think variant insists on <answer>
    ("<answer>bird</answer>", ["bird", "avian"], {"require_tags": True}, 1.0),
]


@pytest.mark.parametrize(("completion", "gold", "kwargs", "expected"), CLASSIFICATION_CASES)
def test_classification_table(completion: str, gold, kwargs: dict, expected: float) -> None:
    assert score("classification", completion, kwargs, answer=gold) == expected


FORMAT_CASES = [
    # (completion, kwargs, expected)
    ("<think>a\nb</think>\n<answer>4</answer>", {}, 1.0),  # newlines inside and between
    ("  <think>x</think><answer>4</answer>\n", {}, 1.0),
    ("<think>x</think>", {}, 0.0),  # no answer block
    ("<answer>4</answer>", {}, 0.0),  # no thinking
    ("<think>x</think><answer>4</answer> and more text", {}, 0.0),  # trailing text
    ("<answer>4</answer><think>x</think>", {}, 0.0),  # wrong order
    (r"so \boxed{4}", {"pattern": r".*\\boxed\{.+\}.*"}, 1.0),  # a task's own format
    (r"so \boxed{4} done", {"pattern": r"\\boxed\{\d+\}", "mode": "search"}, 1.0),
    ("so 4", {"pattern": r"\\boxed\{\d+\}", "mode": "search"}, 0.0),
]


@pytest.mark.parametrize(("completion", "kwargs", "expected"), FORMAT_CASES)
def test_format_table(completion: str, kwargs: dict, expected: float) -> None:
    assert score("format", completion, kwargs) == expected


def test_format_bad_regex_fails_at_load() -> None:
    with pytest.raises(UserError, match="not a valid regular expression"):
        load_reward(RewardSpec(name="format", kwargs={"pattern": "<think>(.*"}))
    with pytest.raises(UserError, match="mode"):
        load_reward(RewardSpec(name="format", kwargs={"mode": "match"}))


OVERLONG_CASES = [
    # (length, max, kwargs, expected): DAPO r = -((len - (L_max - L_cache)) / L_cache) in the last L_cache tokens
    (50, 100, {"cache_length": 20}, 0.0),
    (80, 100, {"cache_length": 20}, 0.0),  # exactly at the start of the buffer
    (90, 100, {"cache_length": 20}, -0.5),
    (100, 100, {"cache_length": 20}, -1.0),
    (120, 100, {"cache_length": 20}, -1.0),  # beyond the limit
    (90, 100, {}, -0.5),  # default buffer: a fifth of the limit
    (90, 1000, {"max_length": 100, "cache_length": 40}, -0.75),  # max_length overrides the rollout limit
]


@pytest.mark.parametrize(("length", "limit", "kwargs", "expected"), OVERLONG_CASES)
def test_overlong_table(length: int, limit: int, kwargs: dict, expected: float) -> None:
    got = score("overlong", "x", kwargs, completion_length=length, max_completion_length=limit)
    assert got == pytest.approx(expected)


def test_overlong_declares_its_columns_and_checks_kwargs() -> None:
    assert load_reward(RewardSpec(name="overlong")).columns == {"completion_length", "max_completion_length"}
    with pytest.raises(UserError, match="cache_length"):
        load_reward(RewardSpec(name="overlong", kwargs={"cache_length": 0}))


def test_builtin_correctness_marks() -> None:
    needed = {"difficulty_weighted": {"reward": "countdown"}}  # a wrapper: names the reward it scales
    marked = {n for n in REWARDS if load_reward(RewardSpec(name=n, kwargs=needed.get(n, {}))).correctness}
    assert {"math", "numeric", "exact", "choice", "classification"} <= marked
    assert "difficulty_weighted" not in marked  # its scaled values are no right/wrong check
    assert not marked & {"format", "overlong"}
