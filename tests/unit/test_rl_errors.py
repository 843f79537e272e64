"""Bad input to the RL stage: each mistake is a UserError naming what, where and the fix, raised before the
first rollout (no metrics.jsonl is written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rl_testkit import rl_config, single_thread

from r1lab.config import RLConfig, deep_merge, validate
from r1lab.errors import UserError
from r1lab.stages.rl import run_rl


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def _fails(cfg: RLConfig, *phrases: str) -> UserError:
    with pytest.raises(UserError) as info:
        run_rl(cfg)
    text = info.value.render()
    for phrase in phrases:
        assert phrase in text, text
    assert not (Path(cfg.train.output_dir) / "metrics.jsonl").exists()
    return info.value


def test_unknown_reward_name_lists_registered(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir, {"rewards": [{"name": "acuracy"}]})
    err = _fails(cfg, "unknown reward 'acuracy'", "math")
    assert err.where and "acuracy" in err.where


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [("advantage", "grpoo", ["grpo", "rloo"]), ("policy_loss", "dapoo", ["dapo", "dr_grpo"])],
)
def test_unknown_algorithm_names(tmp_path, tiny_model_dir, key, value, names):
    cfg = rl_config(tmp_path, tiny_model_dir, {"algorithm": {key: value}})
    err = _fails(cfg, repr(value), *names)
    assert err.where == f"algorithm.{key}"


def test_reward_file_that_does_not_import(tmp_path, tiny_model_dir):
    bad = tmp_path / "broken.py"
    bad.write_text("def fn(completion, **kw):\n    return 1.0\nimport not_a_module_anywhere\n")
    cfg = rl_config(tmp_path, tiny_model_dir, {"rewards": [{"name": f"{bad}:fn"}]})
    err = _fails(cfg, "not_a_module_anywhere")
    assert "broken.py:3" in (err.where or "")


def test_reward_returning_wrong_type(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir)
    cfg.rewards = [
        cfg.rewards[0].model_copy(update={"name": cfg.rewards[0].name.replace(":target", ":wrong_type")})
    ]
    err = _fails(cfg, "returned a str", "float")
    assert "wrong_type" in (err.where or "")


def test_batched_reward_returning_wrong_length(tmp_path, tiny_model_dir):
    user = tmp_path / "batched.py"
    user.write_text(
        "def fn(completions, *, prompts, **columns):\n    return [1.0] * (len(completions) + 1)\nfn.batched = True\n"
    )
    cfg = rl_config(tmp_path, tiny_model_dir, {"rewards": [{"name": f"{user}:fn"}]})
    _fails(cfg, "returned 2 values for 1", "one value per completion")


def test_dataset_without_the_column_a_reward_needs(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir)
    data = tmp_path / "no_answer.jsonl"
    data.write_text(json.dumps({"prompt": "Write about a fox 0."}) + "\n")
    cfg.data = cfg.data.model_copy(update={"path": str(data)})
    err = _fails(cfg, "needs the column 'answer'")
    assert "rewards[0]" in (err.where or "")


def test_group_size_below_two_is_rejected(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir)
    with pytest.raises(UserError, match=r"rollout\.n"):
        validate(RLConfig, deep_merge(cfg.model_dump(), {"rollout": {"n": 1}}))


def test_greedy_rollouts_are_rejected(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"temperature": 0.0}})
    err = _fails(cfg, "temperature")
    assert err.where == "rollout.temperature"


def test_prompt_longer_than_the_context(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"max_new_tokens": 500}})
    err = _fails(cfg, "prompt 0 has", "context of 512 tokens")
    assert "record 0" in (err.where or "")


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir)
    step = tmp_path / "run" / "checkpoints" / "step-2"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    (step / "trainer_state.pt").write_bytes(b"")
    _fails(cfg, "already holds checkpoints", "--resume")
