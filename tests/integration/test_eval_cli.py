"""`r1lab data make` and `r1lab eval` end to end on the tiny model, through the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from r1lab.cli import app


def _r1lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "r1lab.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_data_make_then_eval(tiny_model_dir, tmp_path):
    runner = CliRunner()
    data = tmp_path / "data" / "test.jsonl"
    made = runner.invoke(
        app, ["data", "make", "ordering", "--n", "6", "--split", "test", "--out", str(data), "-o", "count=3"]
    )
    assert made.exit_code == 0, made.output
    records = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(records) == 6 and all(len(r["numbers"]) == 3 for r in records)
    assert all(r["completion"].endswith(f"Answer: {r['answer']}") for r in records)

    out = tmp_path / "eval"
    args = [
        "eval",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--reward",
        "ordering",
        "--reward",
        "answer_format",
    ]
    result = runner.invoke(
        app, [*args, "--n", "4", "--k", "1", "--k", "4", "--max-new-tokens", "8", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "results.json").read_text())
    assert metrics["num_problems"] == 6 and metrics["rewards"] == ["ordering", "answer_format"]
    for key in ("accuracy", "pass@1", "pass@4", "maj@1", "maj@4", "format_error_rate", "reward/ordering"):
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0, key
    assert metrics["pass@1"] <= metrics["pass@4"]
    assert 1 <= metrics["mean_length"] <= 8
    assert "| pass@4 |" in (out / "results.md").read_text() and "| pass@4 |" in result.output
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6 * (1 + 4)


def test_eval_a_task_by_name(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["eval", str(tiny_model_dir), "--task", "countdown", "--limit", "3", "--max-new-tokens", "4", "--out", str(out)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "results.json").read_text())
    assert metrics["num_problems"] == 3 and metrics["rewards"] == ["countdown"] and "pass@1" not in metrics


def test_bad_input_is_one_clear_message(tiny_model_dir, tmp_path):
    unknown = _r1lab("data", "make", "sudoku", "--n", "3", "--out", str(tmp_path / "x.jsonl"))
    assert unknown.returncode == 2
    assert "unknown task 'sudoku'" in unknown.stderr and "countdown" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    data = tmp_path / "plain.jsonl"
    data.write_text(json.dumps({"prompt": "Sort 3, 1", "solution": "1, 3"}) + "\n")
    missing = _r1lab("eval", str(tiny_model_dir), "--data", str(data), "--reward", "ordering")
    assert missing.returncode == 2
    assert "'answer'" in missing.stderr and "Traceback" not in missing.stderr


def test_eval_maps_columns_of_a_question_file(tiny_model_dir, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(3)
        )
    )
    base = ["eval", str(tiny_model_dir), "--data", str(data), "--reward", "math", "--max-new-tokens", "4"]
    for mapping in (
        ["--columns", "prompt=question", "--columns", "answer=answer"],
        ["--columns", "prompt=question,answer=answer"],
    ):
        out = tmp_path / mapping[-1].replace(",", "_")
        result = CliRunner().invoke(app, [*base, *mapping, "--out", str(out)])
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "results.json").read_text())
        assert metrics["num_problems"] == 3 and metrics["reward_failures"] == {"math": 0}
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert [s["gold"] for s in samples] == ["0", "2", "4"]
        assert all(f"What is {i} + {i}?" in s["prompt"] for i, s in enumerate(samples))

    unmapped = _r1lab(*base)
    assert unmapped.returncode == 2 and "--columns" in unmapped.stderr and "Traceback" not in unmapped.stderr
    bad = _r1lab(*base, "--columns", "prompt")
    assert bad.returncode == 2 and "'prompt' is not NAME=COLUMN" in bad.stderr
    missing = _r1lab(*base, "--columns", "prompt=query")
    assert missing.returncode == 2 and "query" in missing.stderr and "--columns" in missing.stderr


def test_eval_metrics_are_exact_for_a_reward_known_in_advance(tiny_model_dir, tmp_path):
    """A reward that reads only the gold (1 for even answers) makes every metric known before the model runs:
    golds 0..4 hold 3 even ones, so accuracy and pass@k are 3/5 for greedy and sampled completions alike."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {i}", "answer": str(i)}) + "\n" for i in range(5)))
    reward = tmp_path / "even_gold.py"
    reward.write_text("def even_gold(completion, *, answer, **_):\n    return float(int(answer) % 2 == 0)\n")
    out = tmp_path / "eval"
    args = ["eval", str(tiny_model_dir), "--data", str(data), "--reward", f"{reward}:even_gold"]
    result = CliRunner().invoke(
        app, [*args, "--n", "4", "--k", "1", "--k", "4", "--max-new-tokens", "4", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "results.json").read_text())
    assert metrics["num_problems"] == 5
    for key in ("accuracy", "pass@1", "pass@4", "mean_reward", "reward/even_gold"):
        assert metrics[key] == pytest.approx(0.6), key
    # Wilson 95% for 3 of 5 (z = 1.96): (0.6 + z²/10 ± z sqrt(0.24/5 + z²/100)) / (1 + z²/5) = 0.2307 .. 0.8824
    assert metrics["accuracy_ci95"] == pytest.approx([0.2307, 0.8824], abs=1e-4)
