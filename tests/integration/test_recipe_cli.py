"""A two-stage recipe (SFT then RL) and the four-arm comparison, end to end through the CLI on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

STAGES = [
    {"name": "sft", "kind": "sft", "optim": {"lr": 1e-3}, "train": {"max_steps": 3, "batch_size": 8}},
    {
        "name": "rl",
        "kind": "rl",
        "optim": {"lr": 1e-4},
        "rollout": {"n": 4, "max_new_tokens": 12},
        "prompts_per_step": 4,
        "train": {"max_steps": 2, "batch_size": 8},
    },
]


def recipe(tmp_path: Path, model_dir: Path, **changes) -> Path:
    data = {
        "name": "tiny",
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(model_dir)},
        "task": {"name": "addition", "train_size": 48, "test_size": 12, "options": {"digits": 2}},
        "eval": {"max_new_tokens": 16, "batch_size": 16},
        "stages": STAGES,
    } | changes
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def r1lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "r1lab.cli", *args], capture_output=True, text=True, timeout=600
    )


# An eval reward whose verdict depends only on the gold answer, so the accuracy of every model is known in advance.
EVEN_GOLD = """
def even_gold(completion, *, answer, **_):
    return 1.0 if int(answer) % 2 == 0 else 0.0
"""


def test_two_stage_recipe_runs_evaluates_and_skips_finished_stages(tmp_path, tiny_model_dir):
    (tmp_path / "even_gold.py").write_text(EVEN_GOLD)
    evaluation = {
        "max_new_tokens": 16,
        "batch_size": 16,
        "rewards": [{"name": f"{tmp_path}/even_gold.py:even_gold"}],
    }
    path = recipe(tmp_path, tiny_model_dir, eval=evaluation)
    first = r1lab("run", str(path))
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    state = json.loads((run / "pipeline.json").read_text())
    assert [state["stages"][s]["status"] for s in ("sft", "rl")] == ["complete", "complete"]
    assert state["stages"]["rl"]["input"] == state["stages"]["sft"]["model"]  # RL starts from the SFT output
    golds = [
        int(json.loads(line)["answer"]) for line in (run / "data" / "test.jsonl").read_text().splitlines()
    ]
    expected = sum(g % 2 == 0 for g in golds) / len(golds)
    assert len(golds) == 12 and 0 < expected < 1  # the seeded test set holds both kinds
    for label in ("base", "sft", "rl"):
        results = state["evals"][label]
        assert results["num_problems"] == 12
        assert results["accuracy"] == expected and results["mean_reward"] == pytest.approx(expected)
        low, high = results["accuracy_ci95"]
        assert 0.0 < low < expected < high < 1.0
    table = (run / "results.md").read_text()
    assert "| base |" in table and "| rl |" in table

    second = r1lab("run", str(path))
    assert second.returncode == 0, second.stderr
    assert "sft: finished earlier, skipped" in second.stderr.replace("stage ", "")
    assert json.loads((run / "pipeline.json").read_text())["stages"] == state["stages"]

    again = r1lab("run", str(path), "--from", "rl")
    assert again.returncode == 0, again.stderr
    assert "finished earlier, skipped" in again.stderr  # sft skipped, rl rerun
    assert "stage rl (rl)" in again.stderr


def test_compare_writes_four_arms_table_plots_and_html(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir)
    result = r1lab("compare", str(path))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    table = (run / "results.md").read_text()
    for arm in ("base", "SFT-only", "RL-only", "SFT→RL"):
        assert f"| {arm} |" in table
    state = json.loads((run / "pipeline.json").read_text())
    assert state["stages"]["rl-only"]["input"] == str(tiny_model_dir)  # RL-only starts from the base model
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert "http://" not in page and "https://" not in page  # renders offline
    assert (run / "plots" / "accuracy.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stages": [{"name": "a", "kind": "ppo"}]}, "unknown stage kind 'ppo'"),
        ({"stages": [STAGES[0], STAGES[0]]}, "two stages are named 'sft'"),
        ({"task": {"name": "sudoku"}}, "unknown task 'sudoku'"),
        ({"model": {"path": "/nonexistent/model"}}, "/nonexistent/model"),
        ({"stages": [{**STAGES[1], "input": "later"}]}, "not an earlier stage"),
    ],
)
def test_recipe_mistakes_get_one_clear_error(tmp_path, tiny_model_dir, changes, message):
    result = r1lab("run", str(recipe(tmp_path, tiny_model_dir, **changes)))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
