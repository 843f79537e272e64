"""RewardRunner: weighted sums, None and failures, wrong types, timeouts and crashes isolated in the worker."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner

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
    assert batch.accuracy[0] == 1.0 and math.isnan(batch.accuracy[1])
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
    assert batch.accuracy is None  # no correctness reward configured


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
