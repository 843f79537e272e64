"""run_eval on the tiny random model: files written, metrics consistent with the samples, clear errors."""

from __future__ import annotations

import json
import math

import pytest

from r1lab.config import EvalConfig, RewardSpec
from r1lab.errors import UserError
from r1lab.eval import pass_at_k, results_table, run_eval, summarize
from r1lab.tasks import get_task


def test_task_eval_writes_results_md_and_samples(tiny_model_dir, tmp_path):
    cfg = EvalConfig(task="addition", limit=4, n=3, k=[1, 2], max_new_tokens=6, batch_size=3)
    results = run_eval(str(tiny_model_dir), cfg, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert results["num_problems"] == 4 and results["n"] == 3
    for key in ("accuracy", "pass@1", "pass@2", "maj@1", "maj@2", "format_error_rate", "mean_length"):
        assert 0.0 <= results[key] <= (6 if key == "mean_length" else 1.0), key
    low, high = results["accuracy_ci95"]
    assert 0.0 <= low <= results["accuracy"] <= high <= 1.0
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert (
        sum(s["kind"] == "greedy" for s in samples) == 4 and sum(s["kind"] == "sample" for s in samples) == 12
    )
    assert all(1 <= s["length"] <= 6 and "arithmetic" in s["rewards"] for s in samples)
    gold = [r["answer"] for r in get_task("addition").generate(4, seed=0, split="test")]
    assert [s["gold"] for s in samples if s["kind"] == "greedy"] == gold  # problems in order
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| model | problems | accuracy | pass@1 | pass@2 | maj@1 | maj@2 |" in table


def test_greedy_is_deterministic_and_metrics_follow_the_reward(tiny_model_dir, tmp_path):
    """A user reward that accepts everything gives accuracy 1; one that accepts nothing gives 0."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {i}", "answer": str(i)}) + "\n" for i in range(3)))
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(
        "def yes(completion, **_):\n    return 1.0\n\ndef no(completion, **_):\n    return 0.0\n"
    )
    runs = {}
    for fn in ("yes", "no"):
        spec = RewardSpec(name=f"{rewards}:{fn}")
        cfg = EvalConfig(data=str(data), rewards=[spec], n=2, k=[1, 2], max_new_tokens=5)
        runs[fn] = run_eval(str(tiny_model_dir), cfg, None)
    assert runs["yes"]["accuracy"] == runs["yes"]["pass@2"] == runs["yes"]["maj@1"] == 1.0
    assert runs["no"]["accuracy"] == runs["no"]["pass@2"] == runs["no"]["maj@2"] == 0.0
    assert runs["yes"]["mean_length"] == runs["no"]["mean_length"]  # same greedy completions
    assert "| yes |" in results_table({"yes": runs["yes"], "no": runs["no"]})


def test_summarize_hand_made_rows():
    def row(problem, kind, answer, correct):
        return {"problem": problem, "kind": kind, "answer": answer, "correct": correct, "format_ok": answer is not None,
                "length": 10, "finish_reason": "stop", "reward": float(correct), "rewards": {"r": float(correct)}}  # fmt: skip

    rows = [row(0, "greedy", "4", True), row(1, "greedy", None, False)]
    rows += [row(0, "sample", a, a == "4") for a in ("4", "4", "5")]
    rows += [row(1, "sample", a, a == "7") for a in ("7", "8", None)]
    out = summarize(rows, EvalConfig(task="addition", n=3, k=[1, 2, 3]), num_problems=2)
    assert out["accuracy"] == 0.5 and out["format_error_rate"] == 0.5
    assert out["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert out["pass@2"] == pytest.approx((1.0 + pass_at_k(3, 1, 2)) / 2)
    # problem 0: "4" wins every vote of 3; problem 1: "7" ties "8" (None abstains) -> 0.5
    assert out["maj@3"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["sample_format_error_rate"] == pytest.approx(1 / 6)
    assert all(not math.isnan(v) for k, v in out.items() if isinstance(v, float))


def test_missing_column_is_named(tiny_model_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "Using 1, 2 make 3", "answer": "1 + 2"}) + "\n")
    cfg = EvalConfig(data=str(data), rewards=[RewardSpec(name="countdown")])
    with pytest.raises(UserError, match="'numbers'"):
        run_eval(str(tiny_model_dir), cfg, None)


def test_unknown_task_and_missing_reward(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="countdown"):  # lists the tasks
        run_eval(str(tiny_model_dir), EvalConfig(task="sudokuu"), None)
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "answer": "1"}) + "\n")
    with pytest.raises(UserError, match="reward"):
        run_eval(str(tiny_model_dir), EvalConfig(data=str(data)), None)


CHECKED = """
def always(completion, **_):
    return 1.0
always.parses = lambda completion, **_: True

def even(completion, **_):
    return 0.0
even.parses = lambda completion, **_: len(completion) % 2 == 0

def plain(completion, **_):
    return 1.0

def boom(completion, *, prompt, **_):
    raise KeyError(f"no gold for {prompt[-6:]!r}")
"""


def _eval_set(tmp_path, n=3):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {i}", "answer": str(i)}) + "\n" for i in range(n)))
    (tmp_path / "checked.py").write_text(CHECKED)
    return data


def _samples(folder):
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def test_format_errors_come_from_the_reward_in_use(tiny_model_dir, tmp_path):
    """Format validity is the accuracy reward's own `parses` check, not the built-in tasks' answer line."""
    data = _eval_set(tmp_path, n=4)
    results = {}
    for fn in ("always", "even", "plain"):
        spec = RewardSpec(name=f"{tmp_path / 'checked.py'}:{fn}")
        cfg = EvalConfig(data=str(data), rewards=[spec], max_new_tokens=5, n=2, k=[1, 2])
        results[fn] = run_eval(str(tiny_model_dir), cfg, tmp_path / fn)
    assert results["always"]["format_error_rate"] == 0.0  # the random tiny model never writes "Answer: x"
    assert results["always"]["sample_format_error_rate"] == 0.0
    greedy = [s for s in _samples(tmp_path / "even") if s["kind"] == "greedy"]
    assert [s["format_ok"] for s in greedy] == [len(s["completion"]) % 2 == 0 for s in greedy]
    assert results["even"]["format_error_rate"] == sum(len(s["completion"]) % 2 for s in greedy) / 4
    assert results["plain"]["format_error_rate"] is None  # it cannot tell: no number is made up
    assert json.loads((tmp_path / "plain" / "results.json").read_text())["format_error_rate"] is None


def test_reward_failures_are_counted_written_and_printed(tiny_model_dir, tmp_path, capsys):
    data = _eval_set(tmp_path)
    specs = [RewardSpec(name=f"{tmp_path / 'checked.py'}:boom"), RewardSpec(name="format")]
    cfg = EvalConfig(data=str(data), rewards=specs, max_new_tokens=4, n=2, k=[1])
    results = run_eval(str(tiny_model_dir), cfg, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["reward_failures"] == results["reward_failures"] == {"boom": 3 * (1 + 2), "format": 0}
    assert results["accuracy"] == 0.0
    errors = [
        json.loads(line) for line in (tmp_path / "out" / "reward_errors.jsonl").read_text().splitlines()
    ]
    samples = _samples(tmp_path / "out")
    assert len(errors) == 9 and {e["reward"] for e in errors} == {"boom"}
    assert sorted(e["completion"] for e in errors) == sorted(s["completion"] for s in samples)
    assert {e["error"] for e in errors} == {f"KeyError: \"no gold for 'say {i}'\"" for i in range(3)}
    assert all(s["reward_failures"] == ["boom"] for s in samples)
    assert "failed reward calls: boom 9" in (tmp_path / "out" / "results.md").read_text()
    printed = " ".join(capsys.readouterr().err.split())
    assert printed.count("reward 'boom' failed") == 1 and "KeyError" in printed
    assert "'boom' 9 failed calls" in printed
    # a second eval into the same folder that fails nowhere leaves no stale errors file
    cfg = EvalConfig(data=str(data), rewards=[RewardSpec(name="format")], max_new_tokens=4)
    assert run_eval(str(tiny_model_dir), cfg, tmp_path / "out")["reward_failures"] == {"format": 0}
    assert not (tmp_path / "out" / "reward_errors.jsonl").exists()


def test_columns_map_a_question_file(tiny_model_dir, tmp_path):
    from r1lab.config import RecipeConfig, validate
    from r1lab.pipeline import eval_config

    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"what is {i}?", "solution": str(i)}) + "\n" for i in range(2))
    )
    section = {
        "data": str(data),
        "rewards": [{"name": "math"}],
        "columns": {"prompt": "question", "answer": "solution"},
    }
    recipe = validate(RecipeConfig, {"name": "x", "eval": section, "stages": [{"name": "s", "kind": "sft"}]})
    cfg = eval_config(recipe, {})
    assert cfg is not None and cfg.columns == {"prompt": "question", "answer": "solution"}
    results = run_eval(str(tiny_model_dir), cfg.model_copy(update={"max_new_tokens": 4}), tmp_path / "out")
    samples = _samples(tmp_path / "out")
    assert results["num_problems"] == 2 and ["what is 0?" in s["prompt"] for s in samples] == [True, False]
    assert [s["gold"] for s in samples] == ["0", "1"]  # the mapped answer column reaches the reward
    # unmapped columns: the fixes name eval's own key, not data.columns (which eval does not have)
    for columns, message in (
        ({}, "cannot tell the data format"),
        ({"prompt": "question"}, "column 'answer'"),
    ):
        cfg = EvalConfig(data=str(data), rewards=[RewardSpec(name="math")], columns=columns)
        with pytest.raises(UserError, match=message) as info:
            run_eval(str(tiny_model_dir), cfg, None)
        assert "--columns" in str(info.value) and "data.columns" not in str(info.value)
