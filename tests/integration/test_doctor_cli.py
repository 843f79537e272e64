"""`r1lab doctor` on the tiny model: a sound SFT and RL config pass every check, and each planted fault fails
the check that names it (a template that never writes the EOS, eval data inside the training data, a reward that
raises); missing data or model raise the stage's own UserError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from r1lab.config import SFTConfig, validate
from r1lab.doctor import run_doctor
from r1lab.errors import UserError
from r1lab.stages.sft import run_sft

# the tiny tokenizer's ChatML, but a turn ends in a newline: the EOS (<|im_end|>) is never written, so never trained
NO_EOS = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
REWARDS = """
def contains(completion, *, answer, **columns):
    return float(answer in completion)

def broken(completion, **columns):
    raise KeyError("score")
"""


def problems(path: Path, numbers: range) -> str:
    rows = [{"prompt": f"What is {i} + {i + 1}?", "completion": f"It is {2 * i + 1}.", "answer": str(2 * i + 1)}
            for i in numbers]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def sft_config(tmp_path: Path, model_dir: Path, **sections: Any) -> Path:
    cfg = {
        "kind": "sft",
        "model": {"path": str(model_dir)},
        "data": {"path": problems(tmp_path / "train.jsonl", range(12)), "max_length": 64},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 2, "grad_accum": 2, "max_steps": 1},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def by_name(results: list) -> dict[str, Any]:
    ((_, checks),) = results
    return {c.name: c for c in checks}


def test_a_sound_sft_config_passes_and_shows_the_trained_end_of_turn(tmp_path, tiny_model_dir):
    eval_path = problems(tmp_path / "test.jsonl", range(20, 24))
    checks = by_name(run_doctor(sft_config(tmp_path, tiny_model_dir, data={"eval_path": eval_path})))
    assert {n: c.status for n, c in checks.items()} == {
        "chat template": "ok", "data": "ok", "accumulation": "ok", "step cost": "ok", "eval overlap": "ok",
    }  # fmt: skip
    template = checks["chat template"].details
    assert template[0] == "generation stops at: '<|im_end|>' (2)"
    # example 1 is "<|im_start|>user\nWhat is 0 + 1?<|im_end|>\n<|im_start|>assistant\nIt is 1.<|im_end|>\n":
    # the assistant's <|im_end|> is trained (T), the user's is not (.), nor the newline after either
    ends = [line.split() for line in template if line.endswith("'<|im_end|>'")]
    assert [e[2] for e in ends[:2]] == [".", "T"]
    assert "12 of 12 examples kept" in checks["data"].summary
    assert "relative difference" in checks["accumulation"].summary
    assert "0 of 4 test prompts" in checks["eval overlap"].summary
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_a_template_that_never_writes_the_eos_fails_the_template_check(tmp_path, tiny_model_dir):
    checks = by_name(run_doctor(sft_config(tmp_path, tiny_model_dir, model={"chat_template": NO_EOS})))
    bad = checks["chat template"]
    assert bad.failed and "12 of 12 examples checked: a trained turn ends in 'Ċ'" in bad.summary
    assert "eos_token" in bad.fix and "chat_template" in bad.fix
    assert [c.name for c in checks.values() if c.failed] == ["chat template"]


def test_eval_data_inside_the_training_data_fails_the_overlap_check(tmp_path, tiny_model_dir):
    eval_path = problems(tmp_path / "test.jsonl", range(10, 14))  # 10 and 11 are training problems
    checks = by_name(run_doctor(sft_config(tmp_path, tiny_model_dir, data={"eval_path": eval_path})))
    bad = checks["eval overlap"]
    assert bad.failed and bad.summary.startswith("2 of 4 test prompts (50.0%)")
    assert bad.details[0] == "test #1 = train #11 (100%): 'What is 10 + 11?'"


def test_missing_data_or_model_is_the_stage_s_own_error(tmp_path, tiny_model_dir):
    for sections in (
        {"data": {"path": str(tmp_path / "nope.jsonl")}},
        {"model": {"path": str(tmp_path / "none")}},
    ):
        path = sft_config(tmp_path, tiny_model_dir, **sections)
        with pytest.raises(UserError) as doctor:
            run_doctor(path)
        with pytest.raises(UserError) as stage:
            run_sft(validate(SFTConfig, yaml.safe_load(path.read_text())))
        assert str(doctor.value) == str(stage.value)


def test_rl_doctor_runs_the_rewards_and_a_raising_one_fails(tmp_path, tiny_model_dir):
    (tmp_path / "rewards.py").write_text(REWARDS)
    cfg = {
        "kind": "rl",
        "model": {"path": str(tiny_model_dir)},
        "data": {"path": problems(tmp_path / "train.jsonl", range(6)), "max_length": 64},
        "rewards": [
            {"name": f"{tmp_path / 'rewards.py'}:contains"},
            {"name": f"{tmp_path / 'rewards.py'}:broken"},
        ],
        "rollout": {"n": 2, "max_new_tokens": 8, "top_p": 0.9, "top_k": 20},
        "prompts_per_step": 2,
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 1},
    }
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(cfg))
    checks = by_name(run_doctor(tmp_path / "rl.yaml"))
    assert [n for n, c in checks.items() if c.status != "ok"] == ["rewards", "eval overlap"]
    assert checks["eval overlap"].status == "skip"
    rewards = checks["rewards"]
    assert rewards.failed and "rewards[1]" in rewards.summary and "KeyError" in rewards.summary
    assert rewards.details[0].startswith("rewards[0] ") and "0 of 4 calls failed" in rewards.details[0]
    assert "4 of 4 calls failed" in rewards.details[1]
    assert "top_p 0.9, top_k 20" in checks["sampler vs trainer log-probs"].summary
    assert "one micro-batch of 4 vs 2 of 2" in checks["accumulation"].summary


def test_the_command_exits_1_with_the_fix(tmp_path, tiny_model_dir):
    path = sft_config(tmp_path, tiny_model_dir, model={"chat_template": NO_EOS})
    result = subprocess.run(
        [sys.executable, "-m", "r1lab.cli", "doctor", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr
    assert "[FAIL] chat template" in result.stdout and "1 failed check(s): chat template" in result.stdout
    assert "fix: set model.chat_template" in result.stdout


def test_a_recipe_checks_each_training_stage_against_its_eval_set(tmp_path, tiny_model_dir):
    stages = [
        {"name": "sft", "kind": "sft", "train": {"max_steps": 3, "batch_size": 2}},
        {"name": "rl", "kind": "rl", "rollout": {"n": 2, "max_new_tokens": 8}, "prompts_per_step": 2,
         "train": {"max_steps": 2, "batch_size": 4}},
    ]  # fmt: skip
    recipe = {
        "name": "tiny",
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(tiny_model_dir)},
        "task": {"name": "addition", "train_size": 24, "test_size": 8, "options": {"digits": 2}},
        "eval": {"max_new_tokens": 8},
        "stages": stages,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    results = run_doctor(tmp_path / "recipe.yaml")
    assert [label for label, _ in results] == ["sft (sft)", "rl (rl)"]
    for _, checks in results:
        overlap = next(c for c in checks if c.name == "eval overlap")
        assert overlap.status == "ok" and overlap.summary.startswith("0 of 8 test prompts")
        # the instruction every prompt ends in, "show your steps then write the final line as answer number" (11
        # words after normalisation), holds 4 8-grams that all 24 training prompts share: template, ignored
        assert "(the 4 found in more than 10 training prompts)" in overlap.summary
        assert not [c.name for c in checks if c.failed]
    assert not (tmp_path / "run").exists()
