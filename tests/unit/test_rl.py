"""The RL stage on the tiny model: it learns a toy verifiable task, writes the run layout and its metrics,
and handles LoRA + KL to the reference, mu > 1, dynamic sampling and NaN/inf steps."""

from __future__ import annotations

import json

import pytest
import torch
from rl_testkit import TARGET, read_metrics, rl_config, single_thread, weights
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


@pytest.mark.parametrize("loss_agg", ["seq_mean_token_mean", "token_mean"])
def test_reward_rises_on_a_toy_task(tmp_path, tiny_model_dir, loss_agg):
    """Reward 1 when the completion contains the token "7": the random tiny model says it in ~3% of samples
    at first and learns to say it nearly always."""
    steps = 30
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "algorithm": {"loss_agg": loss_agg, "advantage": "grpo"},
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
        "algorithm": {"advantage": "dr_grpo", "loss_agg": "seq_mean_token_sum_norm"},
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
            "algorithm": {"mask_truncated": True, "loss_agg": "token_mean"},
        },
    )
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert [m["clipped_ratio"] for m in metrics] == [1.0, 1.0]
    assert [m["tokens_trained"] for m in metrics] == [0.0, 0.0]
    assert [m["grad_norm"] for m in metrics] == [0.0, 0.0]


def _length_reward(tmp_path, tiny_model_dir) -> str:
    return rl_config(tmp_path, tiny_model_dir).rewards[0].name.replace(":target", ":length")


def test_full_finetuning_with_kl_to_a_frozen_copy(tmp_path, tiny_model_dir):
    """beta > 0 without LoRA: the reference is a frozen full copy; it trains, and the KL grows from 0 as the
    policy leaves the initial weights (on CUDA this failed: the copy was made before prepare moved the policy)."""
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "rewards": [{"name": _length_reward(tmp_path, tiny_model_dir)}],
            "algorithm": {"beta": 0.1},
            "optim": {"lr": 5e-2},
            "train": {"max_steps": 3},
        },
    )
    final = run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # first update: policy == reference
    assert metrics[-1]["kl"] > 1e-4
    assert metrics[-1]["skipped_steps"] == 0
    before, after = weights(tiny_model_dir), weights(final)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_reference_is_a_frozen_copy_on_the_policys_device(tmp_path, tiny_model_dir):
    """Built from the prepared policy: same device as the policy, no grads, and an update leaves it as it was."""
    from r1lab.models import load_model
    from r1lab.stages.rl import make_reference
    from r1lab.training.accel import build_accelerator

    cfg = rl_config(tmp_path, tiny_model_dir, {"algorithm": {"beta": 0.1}})
    accelerator, _ = build_accelerator(cfg.train, cfg.model)
    model, _ = load_model(cfg.model, trainable=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    policy = accelerator.unwrap_model(model)
    reference = make_reference(policy, cfg)
    assert reference is not None and reference.model is not policy
    device = next(policy.parameters()).device
    frozen = {k: v.clone() for k, v in reference.model.state_dict().items()}
    assert all(p.device == device and not p.requires_grad for p in reference.model.parameters())
    loss = sum(p.square().sum() for p in policy.parameters())
    accelerator.backward(loss)
    optimizer.step()
    assert all(torch.equal(frozen[k], v) for k, v in reference.model.state_dict().items())
    assert any(not torch.equal(frozen[k], v) for k, v in policy.state_dict().items())
    assert (
        make_reference(
            policy, cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"beta": 0.0})})
        )
        is None
    )


def test_the_engine_gets_the_weights_after_every_update(tmp_path, tiny_model_dir, monkeypatch):
    """An engine with its own copy of the weights (vLLM) must be sent them after each step's updates, or
    every step samples from the initial policy. A real HF engine that records what it was sent."""
    import r1lab.rollout as rollout
    from r1lab.rollout import HFEngine

    sent: list[dict[str, torch.Tensor]] = []

    class RecordingEngine(HFEngine):
        def update_weights(self, model: torch.nn.Module) -> None:
            sent.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            super().update_weights(model)

    monkeypatch.setattr(
        rollout,
        "make_engine",
        lambda cfg, model, tokenizer, *, seed=0: RecordingEngine(model, tokenizer, seed=seed),
    )
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {"rewards": [{"name": _length_reward(tmp_path, tiny_model_dir)}], "train": {"max_steps": 3}},
    )
    final = run_rl(cfg)
    assert len(sent) == 3  # once per step, after its update
    initial, last = weights(tiny_model_dir), weights(final)
    assert any(
        not torch.equal(sent[0][k], initial[k]) for k in initial
    )  # the updated weights, not the initial
    assert all(torch.equal(sent[-1][k], last[k]) for k in last)


def test_logged_lr_is_the_one_the_update_used(tmp_path, tiny_model_dir):
    """Linear decay over 2 steps: the updates use lr x 1 and lr x 0.5 (the scheduler reaches 0 only after)."""
    cfg = rl_config(
        tmp_path, tiny_model_dir, {"optim": {"lr": 1e-3, "scheduler": "linear"}, "train": {"max_steps": 2}}
    )
    run_rl(cfg)
    assert [m["lr"] for m in read_metrics(tmp_path / "run")] == pytest.approx([1e-3, 5e-4])


def _eval_records(run_dir) -> list[dict]:
    return [m for m in read_metrics(run_dir) if "eval/accuracy" in m]


def test_periodic_eval_on_an_eval_file_logs_greedy_accuracy(tmp_path, tiny_model_dir):
    """data.eval_path: every eval_every steps and after the last, greedy accuracy on the held-out prompts.
    Two of the four answers are "" (always contained: correct) and two a string the model never writes."""
    held = tmp_path / "held.jsonl"
    answers = ["", "@@never@@", "", "@@never@@"]
    held.write_text(
        "".join(json.dumps({"prompt": f"Say {i}.", "answer": a}) + "\n" for i, a in enumerate(answers))
    )
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {"data": {"eval_path": str(held)}, "train": {"max_steps": 3, "eval_every": 2}},
    )
    run_rl(cfg)
    evals = _eval_records(tmp_path / "run")
    assert [m["step"] for m in evals] == [2, 3]  # periodic (step 2) and final (step 3)
    for m in evals:
        assert m["eval/accuracy"] == 0.5 and m["eval/mean_reward"] == 0.5 and m["eval/num_problems"] == 4
        assert m["eval/accuracy_ci95_low"] < 0.5 < m["eval/accuracy_ci95_high"]


def test_eval_fraction_holds_prompts_out_and_evaluates_the_current_policy(tmp_path, tiny_model_dir):
    """data.eval_fraction: the held-out prompts are never trained on, and the final eval is what `r1lab eval`
    gives for the final model on those prompts (the dense length reward tells different weights apart)."""
    from r1lab.config import EvalConfig, RewardSpec
    from r1lab.data.splits import train_eval_records
    from r1lab.eval import run_eval

    length = _length_reward(tmp_path, tiny_model_dir)
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "rewards": [{"name": length}],
            "data": {"eval_fraction": 0.25},
            "optim": {"lr": 5e-2},
            "train": {"max_steps": 4, "eval_every": 2},
        },
    )
    final = run_rl(cfg)
    _, held = train_eval_records(cfg.data, cfg.train.seed)
    assert len(held) == 2
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and not {s["prompt"] for s in samples} & {r["prompt"] for r in held}
    evals = _eval_records(tmp_path / "run")
    assert [m["step"] for m in evals] == [2, 4] and evals[-1]["eval/num_problems"] == 2
    held_file = tmp_path / "held.jsonl"
    held_file.write_text("".join(json.dumps(r) + "\n" for r in held))
    eval_cfg = EvalConfig(data=str(held_file), rewards=[RewardSpec(name=length)], max_new_tokens=8)
    direct = run_eval(str(final), eval_cfg)
    assert evals[-1]["eval/mean_reward"] == pytest.approx(direct["mean_reward"])
    assert evals[-1]["eval/mean_length"] == pytest.approx(direct["mean_length"])
    assert direct["mean_reward"] != pytest.approx(run_eval(str(tiny_model_dir), eval_cfg)["mean_reward"])
