"""RewardRunner: weighted sums, None and failures, wrong types, timeouts and crashes isolated in the worker."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner
from r1lab.rewards.worker import TIMEOUTS_IN_A_ROW

USER = '''
import os, sys, time

def by_mode(completion, *, prompt, **_):
    """The completion says what to do, so one batch can mix good and bad samples."""
    if completion == "hang":
        time.sleep(60)
    if completion == "spin":
        while True:
            pass
    if completion == "crash":
        os._exit(3)
    if completion == "exit":
        sys.exit(1)
    if completion == "raise":
        raise RuntimeError("bad sample")
    if completion == "str":
        return "1.0"
    if completion == "list":
        return [1.0]
    if completion == "nan":
        return float("nan")
    if completion == "none":
        return None
    if completion == "bool":
        return True
    return float(len(completion))

def batched_len(completions, *, prompts, answer, **_):
    return [float(c == a) for c, a in zip(completions, answer)]
batched_len.batched = True

def batched_short(completions, **_):
    return [1.0] * (len(completions) - 1)
batched_short.batched = True
'''


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_rewards.py"
    path.write_text(textwrap.dedent(USER))
    return path


def rows(answers: list) -> list[dict]:
    return [{"answer": a, "completion_length": 5, "max_completion_length": 10} for a in answers]


@pytest.fixture(params=[True, False], ids=["isolated", "in-process"])
def isolated(request) -> bool:
    return request.param


def test_weighted_sum_per_function_accuracy_and_metrics(isolated: bool) -> None:
    specs = [
        RewardSpec(name="format", weight=0.5),
        RewardSpec(name="math", weight=2.0),
        RewardSpec(name="format", kwargs={"pattern": r".*\\boxed\{.*\}.*"}),
    ]
    completions = [r"<think>a</think><answer>\boxed{4}</answer>", r"\boxed{5}", "no idea"]
    with RewardRunner(specs, isolated=isolated) as runner:
        batch = runner.score(completions, ["q"] * 3, rows(["4", "5", "6"]))
    assert runner.labels == ["format", "math", "format_2"]
    assert batch.per_function == {
        "format": [1.0, 0.0, 0.0],
        "math": [1.0, 1.0, 0.0],
        "format_2": [1.0, 1.0, 0.0],
    }
    assert batch.total.tolist() == [3.5, 3.0, 0.0]
    assert batch.accuracy.tolist() == [1.0, 1.0, 0.0]  # math is the correctness reward, not the first spec
    assert batch.failures == {"format": 0, "math": 0, "format_2": 0} and batch.errors == []
    metrics = batch.metrics()
    assert metrics["reward"] == pytest.approx(6.5 / 3) and metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["reward/math"] == pytest.approx(2 / 3) and metrics["reward/format/failures"] == 0.0


def test_none_counts_as_zero_but_all_none_is_nan(isolated: bool) -> None:
    specs = [RewardSpec(name="math"), RewardSpec(name="exact", kwargs={"answer_key": "label"})]
    columns = [
        {"answer": "4", "label": "x"},
        {"answer": None, "label": "y"},  # math does not apply; exact does
        {"answer": None, "label": None},  # nothing applies
    ]
    with RewardRunner(specs, isolated=isolated) as runner:
        batch = runner.score([r"\boxed{4}", "Answer: y", "?"], ["q"] * 3, columns)
    assert batch.per_function["math"] == [1.0, None, None]
    assert batch.total[:2].tolist() == [1.0, 1.0] and math.isnan(batch.total[2])
    assert batch.accuracy.tolist() == [1.0, 0.0, 0.0]  # a None (no gold) is not correct, as in RL and eval
    assert batch.metrics()["reward/math/none_frac"] == pytest.approx(2 / 3)


def test_raising_and_wrong_type_give_the_failure_reward(user_file: Path, isolated: bool) -> None:
    spec = RewardSpec(name=f"{user_file}:by_mode", failure_reward=-1.0, weight=2.0)
    completions = ["ok", "raise", "str", "list", "nan", "none", "bool", "exit", "four"]
    with RewardRunner([spec], isolated=isolated) as runner:
        batch = runner.score(completions, ["q"] * len(completions), [{}] * len(completions))
    values = batch.per_function["by_mode"]
    assert values == [2.0, -1.0, -1.0, -1.0, -1.0, None, 1.0, -1.0, 4.0]
    assert batch.total[0] == 4.0 and batch.total[1] == -2.0 and batch.total[-1] == 8.0
    assert batch.failures == {"by_mode": 5}
    errors = {e["index"]: e["error"] for e in batch.errors}
    assert set(errors) == {1, 2, 3, 4, 7} and all(e["reward"] == "by_mode" for e in batch.errors)
    assert errors[1] == "RuntimeError: bad sample"
    assert errors[2].startswith("TypeError: reward 'by_mode' returned a str") and "must return" in errors[2]
    assert "returned a list" in errors[3] and "nan" in errors[4] and errors[7].startswith("SystemExit")
    # no correctness reward configured: the first reward is the accuracy one; a failed call is not correct
    assert runner.accuracy_label == "by_mode"
    assert batch.accuracy.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]


def test_timeouts_and_crashes_fail_one_sample_and_scoring_goes_on(user_file: Path) -> None:
    specs = [
        RewardSpec(name=f"{user_file}:by_mode", timeout=0.5, failure_reward=-5.0),
        RewardSpec(name="format"),
    ]
    completions = ["a", "hang", "bb", "spin", "ccc", "crash", "dddd"]
    with RewardRunner(specs) as runner:
        batch = runner.score(completions, ["q"] * 7, [{}] * 7)
        assert batch.per_function["by_mode"] == [1.0, -5.0, 2.0, -5.0, 3.0, -5.0, 4.0]
        assert batch.per_function["format"] == [0.0] * 7  # the second reward still ran for every sample
        assert batch.failures == {"by_mode": 3, "format": 0}
        errors = {e["index"]: e["error"] for e in batch.errors}
        assert errors[1].startswith("TimeoutError") and errors[3].startswith("TimeoutError")
        assert "died (exit code 3)" in errors[5]
        assert runner.worker.restarts == 3
        # the runner keeps working after the restarts
        again = runner.score(["xy"], ["q"], [{}])
        assert again.per_function["by_mode"] == [2.0] and again.failures["by_mode"] == 0


def test_batched_user_function(user_file: Path, isolated: bool) -> None:
    with RewardRunner([RewardSpec(name=f"{user_file}:batched_len")], isolated=isolated) as runner:
        batch = runner.score(["a", "b"], ["q", "q"], rows(["a", "c"]))
        assert batch.per_function["batched_len"] == [1.0, 0.0]
    with (
        RewardRunner([RewardSpec(name=f"{user_file}:batched_short")], isolated=isolated) as runner,
        pytest.raises(UserError, match="returned 1 values for 2") as info,
    ):
        runner.score(["a", "b"], ["q", "q"], [{}, {}])
    assert "rewards[0]" in str(info.value)


def test_missing_columns_are_user_errors() -> None:
    runner = RewardRunner([RewardSpec(name="format"), RewardSpec(name="math", kwargs={"answer_key": "gold"})])
    runner.check_columns({"gold", "id"})  # completion_length / max_completion_length are always supplied
    with pytest.raises(UserError, match="needs the column 'gold'") as info:
        runner.check_columns({"answer", "id"})
    assert "rewards[1]" in str(info.value) and "answer_key" in str(info.value)
    with pytest.raises(UserError, match="needs the column 'gold'"):
        runner.score(["x"], ["q"], [{"answer": "1"}])
    overlong = RewardRunner([RewardSpec(name="overlong")], isolated=False)
    with pytest.raises(UserError, match="completion_length"):  # the caller must pass the lengths
        overlong.score(["x"], ["q"], [{}])
    runner.close()


def test_mismatched_lengths_and_empty_config() -> None:
    with pytest.raises(UserError, match="no reward functions"):
        RewardRunner([])
    with RewardRunner([RewardSpec(name="format")], isolated=False) as runner:
        with pytest.raises(ValueError, match="2 completions but 1 prompts"):
            runner.score(["a", "b"], ["q"], [{}, {}])
        empty = runner.score([], [], [])
        assert empty.total.numel() == 0 and empty.per_function == {"format": []}


def test_large_batch_in_one_worker(isolated: bool) -> None:
    completions = [rf"\boxed{{{i}}}" for i in range(64)]
    answers = [str(i if i % 3 else i + 1) for i in range(64)]
    with RewardRunner([RewardSpec(name="math")], isolated=isolated) as runner:
        batch = runner.score(completions, ["q"] * 64, rows(answers))
    assert batch.per_function["math"] == [0.0 if i % 3 == 0 else 1.0 for i in range(64)]
    if isolated:
        assert runner.worker.restarts == 0


def test_spawned_worker_reloads_the_functions(user_file: Path, monkeypatch) -> None:
    """Where fork is not used (macOS, Windows) the worker is spawned and loads the rewards again itself."""
    monkeypatch.setattr("sys.platform", "darwin")
    specs = [RewardSpec(name="math"), RewardSpec(name=f"{user_file}:by_mode")]
    with RewardRunner(specs) as runner:
        assert runner.worker.ctx.get_start_method() == "spawn"
        batch = runner.score([r"\boxed{2}", "raise"], ["q", "q"], rows(["2", "3"]))
    assert batch.per_function == {"math": [1.0, 0.0], "by_mode": [9.0, 0.0]}
    assert batch.failures == {"math": 0, "by_mode": 1}


def test_answer_found_comes_from_the_accuracy_reward(isolated: bool) -> None:
    """Format validity is the accuracy reward's own `parses` check, not the tasks' answer-line rule."""
    completions = [r"so \boxed{3}", "Answer: 3", "<answer>3</answer>", "it is 3", r"cut \boxed{3"]
    specs = [RewardSpec(name="format"), RewardSpec(name="math")]
    with RewardRunner(specs, isolated=isolated) as runner:
        boxed = runner.score(completions, ["q"] * 5, rows(["3"] * 5))
    assert runner.accuracy_label == "math"
    assert boxed.answer_found == [True, True, True, False, False]
    with RewardRunner([RewardSpec(name="arithmetic")], isolated=isolated) as runner:
        lines = runner.score(completions, ["q"] * 5, rows(["3"] * 5))
    assert lines.answer_found == [False, True, False, False, False]
    with RewardRunner([RewardSpec(name="choice", kwargs={"options": "AB"})], isolated=isolated) as runner:
        picked = runner.score(["Answer: (B)", "no idea"], ["q"] * 2, rows(["B", "A"]))
    assert picked.answer_found == [True, False]


def test_a_user_reward_reports_what_it_parsed(user_file: Path, isolated: bool) -> None:
    user_file.write_text(
        "def mine(completion, **_):\n    return float('ok' in completion)\n"
        "mine.parses = lambda completion, **_: completion.startswith('ok')\n"
        "def plain(completion, **_):\n    return 1.0\n"
    )
    with RewardRunner([RewardSpec(name=f"{user_file}:mine")], isolated=isolated) as runner:
        batch = runner.score(["ok", "not ok", "x"], ["q"] * 3, [{}] * 3)
    assert batch.answer_found == [True, False, False] and batch.accuracy.tolist() == [1.0, 1.0, 0.0]
    with RewardRunner([RewardSpec(name=f"{user_file}:plain")], isolated=isolated) as runner:
        assert runner.score(["x"], ["q"], [{}]).answer_found is None  # unknown, not guessed


def test_accuracy_reward_is_one_rule() -> None:
    """The first reward marked as a correctness check, else the first reward (RL and eval both use it)."""
    from r1lab.rewards import load_reward
    from r1lab.rewards.runner import accuracy_index

    fmt, math_, exact = (load_reward(RewardSpec(name=n)) for n in ("format", "math", "exact"))
    assert accuracy_index([fmt, math_, exact]) == 1
    assert accuracy_index([fmt]) == 0
    assert accuracy_index([]) is None


FAILING = """
import time

def boom(completion, *, prompt, **_):
    raise ValueError(f"cannot read {completion!r}")

def hang(completion, **_):
    time.sleep(60)
"""


def test_failures_are_printed_once_written_with_inputs_and_counted(
    tmp_path: Path, isolated: bool, capsys
) -> None:
    (tmp_path / "failing.py").write_text(FAILING)
    errors = tmp_path / "run" / "reward_errors.jsonl"
    specs = [RewardSpec(name=f"{tmp_path / 'failing.py'}:boom"), RewardSpec(name="format")]
    with RewardRunner(specs, isolated=isolated, errors_path=errors) as runner:
        for batch_number in range(2):
            batch = runner.score(["a", "b"], ["p1", "p2"], rows([str(batch_number)] * 2))
            assert batch.failures == {"boom": 2, "format": 0}
    printed = capsys.readouterr().err
    assert printed.count("reward 'boom' failed") == 1  # the first failure only, with its exception text
    assert "ValueError: cannot read 'a'" in printed and "cannot read 'b'" not in printed
    assert "'boom' 4 failed calls" in " ".join(printed.split())  # the total when the runner closes
    records = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [(r["batch"], r["index"], r["completion"], r["prompt"]) for r in records] == [
        (1, 0, "a", "p1"), (1, 1, "b", "p2"), (2, 0, "a", "p1"), (2, 1, "b", "p2")
    ]  # fmt: skip
    assert records[2]["columns"]["answer"] == "1" and records[3]["error"] == "ValueError: cannot read 'b'"
    assert all(r["reward"] == "boom" for r in records)


def test_a_function_that_always_hangs_fails_fast_after_a_few_timeouts(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(FAILING)
    specs = [RewardSpec(name=f"{tmp_path / 'failing.py'}:hang", timeout=0.3), RewardSpec(name="format")]
    with RewardRunner(specs) as runner:
        for _ in range(2):  # every batch tries again, and pays for at most TIMEOUTS_IN_A_ROW timeouts
            batch = runner.score(["x"] * 20, ["q"] * 20, [{}] * 20)
            assert batch.failures == {"hang": 20, "format": 0} and batch.per_function["format"] == [0.0] * 20
            messages = [e["error"] for e in sorted(batch.errors, key=lambda e: e["index"])]
            assert all(
                m.startswith("TimeoutError: no result after 0.3s") for m in messages[:TIMEOUTS_IN_A_ROW]
            )
            assert all("not run: 3 calls of this function in a row timed out" in m for m in messages[3:])
    assert runner.worker.skipped == 2 * (20 - TIMEOUTS_IN_A_ROW)
