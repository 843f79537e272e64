"""algorithm.rollout_correction in the RL update (stages/rl_mismatch.off_policy_plan + rl_batch.policy_update):
on rollouts of the tiny model whose sampler log-probs are the trainer's plus known offsets, pi_old becomes
the trainer's recomputation, the weights and fractions are the hand-computed ones, the loss is the weighted
one, and splitting the rows into micro-batches changes nothing. Plus the config rules and the sampler-filter
check (TRL #6789)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
from rl_testkit import rl_config, single_thread
from test_rollout_hf import prompts_for, recomputed_logprobs
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import RLConfig, validate
from r1lab.errors import UserError
from r1lab.rollout import HFEngine, SamplingParams
from r1lab.stages.rl_batch import plan_update, policy_update
from r1lab.stages.rl_checks import check_names
from r1lab.stages.rl_mismatch import off_policy_plan, rollout_mismatch

OFFSETS = torch.tensor([0.0, 0.9, -0.3, 0.05, -1.2])  # sampler = trainer + offset, cycling over the tokens


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


class _Accelerator:
    device = "cpu"

    def unwrap_model(self, model):
        return model

    def no_sync(self, model):
        return nullcontext()

    def backward(self, loss):
        loss.backward()


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rollouts = HFEngine(model, tokenizer).generate(
        prompts_for(tokenizer), 4, SamplingParams(max_new_tokens=6, seed=0)
    )
    trainer = recomputed_logprobs(model, rollouts, 1.0)
    mask = rollouts.completion_mask.bool()
    d = OFFSETS[torch.arange(mask.numel()) % len(OFFSETS)].reshape(mask.shape) * mask
    return model, replace(rollouts, logprobs=(trainer + d) * mask), trainer, d, mask


def correction(cfg: RLConfig):
    return cfg.algorithm.rollout_correction


def config(tmp_path, model_dir, correction=None, batch_size=8, **algo) -> RLConfig:
    algorithm = {**algo, **({"rollout_correction": correction} if correction is not None else {})}
    return rl_config(
        tmp_path,
        model_dir,
        {
            "rollout": {"n": 4, "engine": "vllm"},  # validated only: nothing here builds the engine
            "train": {"batch_size": batch_size},
            "algorithm": algorithm,
        },
    )


def test_pi_old_is_the_trainers_and_the_metrics_are_the_measured_ones(setup, tmp_path, tiny_model_dir):
    model, rollouts, trainer, *_ = setup
    advantages = torch.linspace(-1, 1, len(rollouts))
    plan = plan_update(rollouts, advantages, config(tmp_path, tiny_model_dir))
    new, metrics = off_policy_plan(model, plan, "cpu", 1.0)
    torch.testing.assert_close(new.rows.logprobs, trainer, rtol=1e-5, atol=1e-5)
    assert new.is_weights is None
    assert metrics == pytest.approx(rollout_mismatch(model, plan, "cpu", 1.0))
    assert metrics["mismatch/ratio_max"] == pytest.approx(math.exp(1.2), rel=1e-4)
    assert metrics["mismatch/ratio_min"] == pytest.approx(math.exp(-0.9), rel=1e-4)


def test_token_tis_weights_fraction_and_weighted_loss(setup, tmp_path, tiny_model_dir):
    model, rollouts, _, d, mask = setup
    advantages = torch.linspace(-1, 1, len(rollouts))
    cfg = config(tmp_path, tiny_model_dir, {"mode": "tis", "threshold": 1.5}, policy_loss="ppo_clip")
    plan, metrics = off_policy_plan(
        model, plan_update(rollouts, advantages, cfg), "cpu", 1.0, correction(cfg)
    )
    rho = torch.exp(-d)  # pi_trainer / pi_sampler
    expected = rho.clamp(max=1.5) * mask
    torch.testing.assert_close(plan.is_weights, expected, rtol=1e-4, atol=1e-5)
    assert metrics["mismatch/clipped_fraction"] == pytest.approx(float((rho[mask] > 1.5).float().mean()))
    assert 0 < metrics["mismatch/clipped_fraction"] < 1  # the 1.2 offsets: rho = e^1.2 = 3.3 > 1.5
    assert metrics["mismatch/weight_mean"] == pytest.approx(float(expected[mask].mean()), rel=1e-4)

    model.zero_grad()
    sums = policy_update(model, plan, cfg, _Accelerator(), None)
    # pi_old = the trainer's own log-probs, so at mu = 1 rho_theta = 1 and L_t = -A w_t; seq_mean_token_mean
    per_row = (-advantages[:, None] * expected).sum(-1) / mask.sum(-1)
    assert float(sums["loss"]) == pytest.approx(float(per_row.sum() / (mask.sum(-1) > 0).sum()), abs=1e-5)
    assert float(sums["ratio"]) / float(sums["tokens"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "settings",
    [{"mode": "tis", "level": "sequence"}, {"mode": "mis", "level": "token", "threshold": 2.0, "lower": 0.5}],
)
def test_one_micro_batch_of_8_equals_8_of_one(setup, tmp_path, tiny_model_dir, settings):
    model, rollouts, *_ = setup
    advantages = torch.linspace(-1, 1, len(rollouts))
    results = []
    for batch_size in (len(rollouts), 1):
        cfg = config(tmp_path, tiny_model_dir, settings, batch_size=batch_size, loss_agg="token_mean")
        plan, _ = off_policy_plan(model, plan_update(rollouts, advantages, cfg), "cpu", 1.0, correction(cfg))
        assert len(plan.micro_batches) == (1 if batch_size > 1 else len(rollouts))
        model.zero_grad()
        sums = policy_update(model, plan, cfg, _Accelerator(), None)
        results.append((float(sums["loss"]), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-6) and loss_a != 0
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_every_key_changes_the_weights(setup, tmp_path, tiny_model_dir):
    """mode, level, threshold and lower each change the weights."""
    model, rollouts, *_ = setup
    advantages = torch.ones(len(rollouts))

    def weights(correction):
        cfg = config(tmp_path, tiny_model_dir, correction)
        plan = plan_update(rollouts, advantages, cfg)
        return off_policy_plan(model, plan, "cpu", 1.0, cfg.algorithm.rollout_correction)[0].is_weights

    base = weights({"mode": "mis", "level": "token", "threshold": 2.0, "lower": 0.5})
    for change in [
        {"mode": "tis", "level": "token", "threshold": 2.0},
        {"mode": "mis", "level": "sequence", "threshold": 2.0, "lower": 0.5},
        {"mode": "mis", "level": "token", "threshold": 4.0, "lower": 0.5},
        {"mode": "mis", "level": "token", "threshold": 2.0, "lower": 0.3},
    ]:
        assert not torch.allclose(weights(change), base), change


def test_config_defaults_are_verls_presets_and_bad_keys_are_refused(tmp_path, tiny_model_dir):
    def bounds(correction):
        return config(tmp_path, tiny_model_dir, correction).algorithm.rollout_correction.bounds()

    assert bounds({}) == (None, 2.0)  # decoupled_token_is
    assert bounds({"level": "sequence"}) == (None, 2.0)  # decoupled_seq_is
    assert bounds({"mode": "mis"}) == (0.5, 5.0)  # decoupled_token_icepop
    assert bounds({"mode": "mis", "level": "sequence"}) == (0.5, 2.0)  # decoupled_seq_is_rs
    assert bounds({"mode": "mis", "level": "geometric"}) == (0.999, 1.001)  # decoupled_geo_rs
    for bad, message in [
        ({"lower": 0.5}, "read only by mode: mis"),
        ({"level": "geometric"}, "not a weight"),
        ({"mode": "mis", "lower": 3.0, "threshold": 2.0}, "above its threshold"),
        ({"mode": "is"}, "mode"),
    ]:
        with pytest.raises(UserError, match=message):
            config(tmp_path, tiny_model_dir, bad)


def test_correction_is_refused_where_the_sampler_is_the_trainer(tmp_path):
    with pytest.raises(UserError, match="the sampler is the trainer itself"):
        validate(RLConfig, {"data": {"path": "x.jsonl"}, "algorithm": {"rollout_correction": {}}})
    cfg = validate(
        RLConfig,
        {"data": {"path": "x.jsonl"}, "rollout": {"engine": "vllm"}, "algorithm": {"rollout_correction": {}}},
    )
    assert cfg.algorithm.rollout_correction.mode == "tis"


@pytest.mark.parametrize(
    ("rollout", "algorithm", "refused"),
    [
        ({"engine": "vllm", "top_p": 0.9}, {}, "rollout.top_p=0.9"),
        ({"engine": "vllm", "top_k": 20, "min_p": 0.1}, {"rollout_correction": {}}, "rollout.top_k=20"),
        ({"engine": "vllm", "top_k": 20}, {"policy_loss": "gpg"}, None),  # pi_old unread: a note only
        ({"engine": "vllm"}, {"rollout_correction": {}}, None),  # no filter
        ({"engine": "hf", "top_p": 0.9, "top_k": 20}, {}, None),  # HF reports the unfiltered log-probs
    ],
)
def test_sampler_filters_against_the_loss_log_probs(rollout, algorithm, refused):
    cfg = validate(RLConfig, {"data": {"path": "x.jsonl"}, "rollout": rollout, "algorithm": algorithm})
    if refused is None:
        check_names(cfg)
        return
    with pytest.raises(UserError, match="kept probability mass") as error:
        check_names(cfg)
    assert refused.split("=")[0] in error.value.where and "rollout.top_p: 1.0" in error.value.fix


def test_async_hf_run_with_mis_trains_on_stale_samples_and_logs_the_masked_fraction(tmp_path, tiny_model_dir):
    """rollout.async with the HF engine: the samples are one update old, so the trainer's recomputed pi_old
    differs from the sampler's log-probs; the weights correct for it and every step logs them."""
    from rl_testkit import read_metrics

    from r1lab.stages.rl import run_rl

    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "rollout": {"async": True},
            "algorithm": {
                "rollout_correction": {"mode": "mis", "level": "token", "threshold": 1.05, "lower": 0.95}
            },
            "rewards": [{"name": f"{tmp_path / 'user_rewards.py'}:length"}],  # dense: every step trains
            "optim": {"lr": 3e-2},  # big steps: one update of staleness moves the log-probs visibly
            "train": {"max_steps": 2},
        },
    )
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert [m["async/staleness"] for m in metrics] == [0, 1]
    for m in metrics:
        assert m["ratio"] == pytest.approx(1.0, abs=1e-5)  # pi_old: the trainer's own log-probs
        assert 0.0 <= m["mismatch/masked_fraction"] <= 1.0
    fresh, stale = metrics[0], metrics[1:]
    assert fresh["mismatch/kl"] < 1e-8 and fresh["mismatch/masked_fraction"] == 0.0
    assert all(m["mismatch/kl"] > 1e-4 and m["mismatch/masked_fraction"] > 0 for m in stale), stale
