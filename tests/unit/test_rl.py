"""The RL stage on the tiny model: it learns a toy verifiable task, writes the run layout and its metrics,
and handles LoRA + KL to the reference, mu > 1, dynamic sampling and NaN/inf steps."""

from __future__ import annotations

import json

import pytest
import torch
from rl_testkit import TARGET, read_metrics, rl_config, single_thread
from transformers import AutoModelForCausalLM

from r1lab.errors import UserError
from r1lab.stages.rl import run_rl


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


STEP_KEYS = {
    "reward/mean",
    "reward/std",
    "reward/target/mean",
    "reward/target/std",
    "accuracy",
    "frac_zero_std_groups",
    "completion_length/mean",
    "completion_length/min",
    "completion_length/max",
    "clipped_ratio",
    "entropy",
    "clip_ratio/low",
    "clip_ratio/high",
    "ratio",
    "grad_norm",
    "loss",
    "lr",
    "time/generation",
    "time/reward",
    "time/training",
    "tokens_per_s",
    "skipped_steps",
}


@pytest.mark.parametrize("loss", ["grpo", "dapo"])
def test_reward_rises_on_a_toy_task(tmp_path, tiny_model_dir, loss):
    """Reward 1 when the completion contains the token "7": the random tiny model says it in ~3% of samples
    at first and learns to say it nearly always."""
    steps = 30
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "algorithm": {"policy_loss": loss, "advantage": "grpo"},
            "rollout": {"n": 8, "max_new_tokens": 6},
            "prompts_per_step": 4,
            "optim": {"lr": 1e-2},
            "train": {"max_steps": steps, "batch_size": 16, "save_every": 10},
            "samples_every": 10,
        },
    )
    final = run_rl(cfg)
    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    first = sum(m["reward/mean"] for m in metrics[:5]) / 5
    last = sum(m["reward/mean"] for m in metrics[-5:]) / 5
    assert last > first + 0.2, (first, last)

    # the run folder: resolved config, metrics with every per-step key, samples, checkpoints, final model
    assert set(metrics[-1]) >= STEP_KEYS, STEP_KEYS - set(metrics[-1])
    assert metrics[-1]["skipped_steps"] == 0
    assert (run / "config.yaml").is_file()
    assert json.loads((run / "state.json").read_text())["status"] == "complete"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-10", "step-20", "step-30"]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 10, 20, 30}
    assert len([s for s in samples if s["step"] == 30]) == 4 * 8
    assert any(TARGET in s["completion"] and s["reward"] > 0 for s in samples if s["step"] == 30)
    assert final == run / "final"
    AutoModelForCausalLM.from_pretrained(final)


def test_mu1_rollout_logprobs_match_the_update_forward(tmp_path, tiny_model_dir):
    """With mu == 1 the rollout log-probs serve as pi_old: the update's recomputed ratio is 1 (no clipping)."""
    length = rl_config(tmp_path, tiny_model_dir).rewards[0].name.replace(":target", ":length")
    cfg = rl_config(
        tmp_path, tiny_model_dir, {"rewards": [{"name": length}], "train": {"max_steps": 1, "batch_size": 3}}
    )
    run_rl(cfg)
    (m,) = read_metrics(tmp_path / "run")
    assert m["ratio"] == pytest.approx(1.0, abs=1e-5)
    assert m["clip_ratio/low"] == m["clip_ratio/high"] == 0.0


def test_lora_with_kl_to_the_adapter_free_base_and_mu2(tmp_path, tiny_model_dir):
    length = rl_config(tmp_path, tiny_model_dir).rewards[0].name.replace(":target", ":length")
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "rewards": [{"name": length}],
            "model": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "merge_on_save": True}},
            "algorithm": {"beta": 0.1, "mu": 2, "eps_low": 0.01, "eps_high": 0.01},
            "optim": {"lr": 5e-2},
            "train": {"max_steps": 3},
        },
    )
    final = run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    # the first update starts at the base weights (KL exactly 0 then); later ones have moved away from it
    assert metrics[-1]["kl"] > 0
    assert any(
        m["clip_ratio/low"] + m["clip_ratio/high"] > 0 for m in metrics
    )  # mu = 2: the 2nd update clips
    assert final == tmp_path / "run" / "final" / "merged"
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(final)


def test_dynamic_sampling_drops_flat_groups_and_refills(tmp_path, tiny_model_dir):
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {"algorithm": {"dynamic_sampling": True, "max_refills": 3}, "train": {"max_steps": 2}},
    )
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    # the random model rarely says "7": most groups are all-zero and get replaced by fresh prompts
    assert any(m["refills"] > 0 for m in metrics)
    for m in metrics:
        assert m["groups_trained"] <= cfg.prompts_per_step
    by_group: dict[tuple[int, int], set[float]] = {}
    for s in samples:
        by_group.setdefault((s["step"], s["group"]), set()).add(s["reward"])
    assert by_group and all(len(rewards) > 1 for rewards in by_group.values())


def _exploding(tmp_path, tiny_model_dir, bad: list[int], steps: int, max_bad: int = 3):
    cfg = rl_config(tmp_path, tiny_model_dir)
    name = cfg.rewards[0].name.replace(":target", ":exploding")
    overrides = {
        "rewards": [{"name": name, "kwargs": {"bad": bad}}],
        "algorithm": {"advantage": "dr_grpo", "policy_loss": "dr_grpo"},
        "data": {"shuffle": False},
        "train": {"max_steps": steps, "save_every": 1},
        "max_bad_steps": max_bad,
    }
    return rl_config(tmp_path, tiny_model_dir, overrides)


def test_a_nan_step_is_skipped_and_counted(tmp_path, tiny_model_dir):
    """Prompts 2 and 3 (step 2) get rewards of +-3e38: the loss overflows, so step 2 makes no update."""
    cfg = _exploding(tmp_path, tiny_model_dir, bad=[2, 3], steps=3)
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert [m["bad_step"] for m in metrics] == [0, 1, 0]
    assert [m["skipped_steps"] for m in metrics] == [0, 1, 1]
    ckpt = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-1", "step-3"]  # no checkpoint of a bad step
    state = torch.load(ckpt / "step-3" / "trainer_state.pt", weights_only=True)
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {2.0}  # three generation steps, two optimizer updates


def test_the_run_stops_after_max_bad_steps_in_a_row(tmp_path, tiny_model_dir):
    cfg = _exploding(tmp_path, tiny_model_dir, bad=[2, 3, 4, 5, 6, 7], steps=6, max_bad=3)
    with pytest.raises(UserError) as info:
        run_rl(cfg)
    assert "3 steps in a row had a NaN/inf" in info.value.what
    assert "step-1" in (info.value.fix or "")  # the last good checkpoint is named and kept
    assert len(read_metrics(tmp_path / "run")) == 4
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "interrupted"


def test_mask_truncated_with_every_completion_cut(tmp_path, tiny_model_dir):
    """The random model never stops within 4 tokens: mask_truncated leaves nothing to train, and the step
    still runs (a zero-weight pass) instead of failing."""
    length = rl_config(tmp_path, tiny_model_dir).rewards[0].name.replace(":target", ":length")
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "rewards": [{"name": length}],
            "rollout": {"max_new_tokens": 4},
            "algorithm": {"mask_truncated": True, "policy_loss": "dapo"},
        },
    )
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert [m["clipped_ratio"] for m in metrics] == [1.0, 1.0]
    assert [m["tokens_trained"] for m in metrics] == [0.0, 0.0]
    assert [m["grad_norm"] for m in metrics] == [0.0, 0.0]
