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
