"""A two-stage Countdown curriculum (2 numbers, then the recipe's 3) with the difficulty-weighted partial-credit
reward, end to end through `r1lab run` on the tiny model; a bad stage option stops it before anything trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from test_recipe_cli import r1lab  # the CLI in a child process

REWARDS = [
    {"name": "difficulty_weighted", "kwargs": {"reward": "countdown_partial", "reference": 3}},
    {"name": "countdown", "weight": 0.0},
]
RL = {
    "kind": "rl",
    "optim": {"lr": 1e-4},
    "rollout": {"n": 4, "max_new_tokens": 12},
    "algorithm": {"advantage": "dr_grpo"},
    "rewards": REWARDS,
    "prompts_per_step": 4,
    "train": {"max_steps": 2, "batch_size": 8},
}


def recipe(tmp_path: Path, model_dir: Path, easy: dict) -> Path:
    data = {
        "name": "tiny-curriculum",
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(model_dir)},
        "task": {"name": "countdown", "train_size": 24, "test_size": 8, "options": {"count": 3}},
        "eval": {"max_new_tokens": 12, "batch_size": 8},
        "stages": [{"name": "rl-2", "task": easy, **RL}, {"name": "rl-3", **RL}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _jsonl(path: Path | str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _numbers(prompt: str) -> int:
    return len(re.search(r"Using the numbers ([\d, ]+), make", prompt).group(1).split(","))


def test_two_stage_curriculum_runs_each_stage_on_its_options_and_evals_on_the_test_set(
    tmp_path, tiny_model_dir
):
    result = r1lab("run", str(recipe(tmp_path, tiny_model_dir, {"options": {"count": 2}})))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    state = json.loads((run / "pipeline.json").read_text())
    assert [state["stages"][s]["status"] for s in ("rl-2", "rl-3")] == ["complete", "complete"]
    assert state["stages"]["rl-3"]["input"] == state["stages"]["rl-2"]["model"]
    for stage, count in (("rl-2", 2), ("rl-3", 3)):
        config = yaml.safe_load((run / stage / "config.yaml").read_text())
        rows = _jsonl(config["data"]["path"])
        assert {len(r["numbers"]) for r in rows} == {count} and {r["difficulty"] for r in rows} == {count}
        samples = _jsonl(run / stage / "samples.jsonl")
        assert samples and {_numbers(s["prompt"]) for s in samples} == {count}
        metrics = _jsonl(run / stage / "metrics.jsonl")
        logged = [m for m in metrics if "reward/difficulty_weighted/mean" in m]
        assert logged and all(0 <= m["reward/difficulty_weighted/mean"] <= count / 3 for m in logged)
        assert all("accuracy" in m for m in logged)  # from `countdown` at weight 0
    assert yaml.safe_load((run / "rl-3" / "config.yaml").read_text())["data"]["path"] == str(
        run / "data" / "train.jsonl"
    )
    test = _jsonl(run / "data" / "test.jsonl")
    assert len(test) == 8 and {len(r["numbers"]) for r in test} == {3}
    for label in ("base", "rl-2", "rl-3"):  # every model on the recipe's own held-out problems
        assert state["evals"][label]["num_problems"] == 8


def test_a_bad_curriculum_option_names_the_stage_and_stops_before_training(tmp_path, tiny_model_dir):
    result = r1lab("run", str(recipe(tmp_path, tiny_model_dir, {"options": {"count": 1}})))
    assert result.returncode == 2
    assert "count must be between 2 and 6, got 1" in result.stderr
    assert "stages[0]: task.options.count" in result.stderr
    assert not (tmp_path / "run" / "rl-2").exists() and not (tmp_path / "run" / "eval").exists()
