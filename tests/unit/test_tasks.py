"""Built-in task generators: determinism, disjoint splits, gold answers verified by the task's own reward,
written solutions that reach the gold answer, difficulty knobs and clear errors."""

from __future__ import annotations

import pytest

from r1lab.errors import UserError
from r1lab.rewards.registry import REWARDS
from r1lab.rewards.tasks import evaluate_expression
from r1lab.tasks import TASKS, extract_answer, get_task, has_answer_line, split_of

ALL = ["addition", "multiplication", "countdown", "ordering"]


def _call(name: str, completion: str, record: dict) -> float:
    columns = {k: v for k, v in record.items() if k != "completion"}  # as the reward runner passes them
    return REWARDS.get(name)(completion, **columns)


def test_all_tasks_registered():
    assert set(ALL) <= set(TASKS.names())


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_problems_other_seed_other_problems(name):
    task = get_task(name)
    a = task.generate(50, seed=3, split="train")
    assert a == task.generate(50, seed=3, split="train")
    assert a != task.generate(50, seed=4, split="train")


@pytest.mark.parametrize("name", ALL)
def test_splits_are_disjoint_and_problems_distinct(name):
    task = get_task(name)
    train = task.generate(400, seed=0, split="train")
    test = task.generate(200, seed=0, split="test")
    other_seed_test = task.generate(200, seed=1, split="test")
    prompts = lambda rs: {r["prompt"] for r in rs}  # noqa: E731
    assert len(prompts(train)) == 400 and len(prompts(test)) == 200
    assert not prompts(train) & prompts(test)
    assert not prompts(train) & prompts(other_seed_test)  # disjoint whatever the seeds


@pytest.mark.parametrize("name", ALL)
def test_solutions_reach_the_gold_answer_and_earn_full_reward(name):
    task = get_task(name)
    for record in task.generate(300, seed=1, split="test"):
        completion = record["completion"]
        assert has_answer_line(completion)
        assert extract_answer(completion) == record["answer"]
        assert _call(task.reward, completion, record) == 1.0  # the solution, as written, is right
        assert _call(task.reward, f"Answer: {record['answer']}", record) == 1.0  # the gold answer is right
        assert _call("answer_format", completion, record) == 1.0
        assert 4 <= len(completion.split()) <= 120  # short enough for a small model


def test_arithmetic_steps_are_correct_sums_and_products():
    for name in ("addition", "multiplication"):
        for record in get_task(name).generate(200, seed=0, split="train"):
            *steps, _ = record["completion"].splitlines()
            for line in steps:  # every "x op y (+ c) = z" on a line holds
                expression, value = line.split(",")[0].split("=")
                assert evaluate_expression(expression)[0] == int(value)
            assert int(record["answer"]) == (
                record["a"] + record["b"] if name == "addition" else record["a"] * record["b"]
            )


def test_countdown_steps_and_gold_use_the_numbers():
    for record in get_task("countdown").generate(200, seed=0, split="train"):
        *steps, _ = record["completion"].splitlines()
        assert len(steps) == len(record["numbers"]) - 1
        for line in steps:
            expression, value = line.split("=")
            assert evaluate_expression(expression)[0] == int(value)
        value, used = evaluate_expression(record["answer"])
        assert value == record["target"] and sorted(used) == sorted(record["numbers"])
        assert 1 <= record["target"] <= 100 and record["target"] not in record["numbers"]


def test_difficulty_knobs():
    add = get_task("addition").generate(30, seed=0, split="train", digits=5, digits_b=2)
    assert all(10_000 <= r["a"] <= 99_999 and 10 <= r["b"] <= 99 for r in add)
    mul = get_task("multiplication").generate(30, seed=0, split="train", digits=2, digits_b=2)
    assert all(r["b"] >= 10 and _call("arithmetic", r["completion"], r) == 1.0 for r in mul)
    cd = get_task("countdown").generate(30, seed=0, split="test", count=4, max_number=10, max_target=50)
    assert all(len(r["numbers"]) == 4 and max(r["numbers"]) <= 10 and r["target"] <= 50 for r in cd)
    order = get_task("ordering").generate(30, seed=0, split="train", count=7)
    assert all(len(r["numbers"]) == 7 for r in order)


def test_split_of_is_stable():
    assert split_of("12+34") == split_of("12+34")
    shares = [split_of(str(i)) for i in range(5000)]
    assert 0.15 < shares.count("test") / len(shares) < 0.25


def test_unknown_task_lists_the_tasks():
    with pytest.raises(UserError) as err:
        get_task("sudoku")
    assert "sudoku" in str(err.value) and all(name in str(err.value) for name in ALL)


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("addition", {"digit": 3}, "digits"),  # typo: names the real options
        ("addition", {"digits": "3"}, "int"),
        ("addition", {"digits": 0}, "between 1 and 12"),
        ("countdown", {"count": 9}, "between 2 and 6"),
        ("ordering", {"count": 10, "max_number": 5}, "at least count"),
    ],
)
def test_bad_options(name, options, needle):
    with pytest.raises(UserError, match=needle):
        get_task(name).generate(5, seed=0, split="train", **options)


def test_bad_split_and_too_small_problem_space():
    with pytest.raises(UserError, match="train, test"):
        get_task("addition").generate(5, split="validation")
    with pytest.raises(UserError, match="too few distinct"):
        get_task("addition").generate(100, split="test", digits=1)  # only 55 distinct one-digit sums
