"""AceReason's temperature rule (target_entropy): the search, the probe's entropy, and an RL run that samples
and trains at the picked temperature."""

from __future__ import annotations

import json

import pytest
import torch
from rl_testkit import read_metrics, single_thread, write_inputs
from transformers import AutoModelForCausalLM

from r1lab.algorithms.logprobs import entropy_from_logits
from r1lab.config import RLConfig, validate
from r1lab.errors import UserError
from r1lab.rollout import HFEngine, SamplingParams
from r1lab.stages.rl import run_rl
from r1lab.stages.rl_batch import generation_seed
from r1lab.stages.rl_forward import _plain
from r1lab.stages.rl_temperature import TEMPERATURES, pick_temperature, probe_entropy


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_the_search_stops_once_the_entropy_reaches_the_target_and_keeps_the_closer():
    # entropy T²: 0.3 -> 0.09, 0.4 -> 0.16, 0.5 -> 0.25, 0.6 -> 0.36 (reached: stop); |0.25 - 0.3| < |0.36 - 0.3|
    choice = pick_temperature(lambda t: t * t, 0.3)
    assert choice["temperature"] == 0.5
    assert list(choice["probes"]) == [0.3, 0.4, 0.5, 0.6]
    assert pick_temperature(lambda t: t * t, 0.34)["temperature"] == 0.6
    assert pick_temperature(lambda t: 9.0, 0.3)["temperature"] == TEMPERATURES[0]  # already above: the lowest
    assert (
        pick_temperature(lambda t: t / 10, 0.3)["temperature"] == TEMPERATURES[-1]
    )  # never reached: the highest


def config(tmp_path, tiny_model_dir, **over) -> RLConfig:
    data, rewards = write_inputs(tmp_path)
    raw = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"path": str(data), "format": "prompt"},
        "rewards": [{"name": f"{rewards}:length"}],
        "rollout": {"n": 4, "max_new_tokens": 8},
        "prompts_per_step": 2,
        "optim": {"lr": 1e-3, "scheduler": "constant"},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 4, "seed": 0},
        **over,
    }
    return validate(RLConfig, raw)


def test_probe_entropy_is_the_mean_token_entropy_at_that_temperature(
    tmp_path, tiny_model_dir, tiny_tokenizer
):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    engine = HFEngine(model, tiny_tokenizer)
    cfg = config(tmp_path, tiny_model_dir)

    class Prompt:
        prompt_ids = tiny_tokenizer.encode("What is 2 + 2?")

    got = probe_entropy(engine, model, [Prompt()], cfg, 0.7, "cpu")
    # the same samples (same seed), their entropy from the plain forward's logits
    sampling = SamplingParams(temperature=0.7, max_new_tokens=8, seed=generation_seed(0, -1))
    rows = engine.generate([Prompt.prompt_ids], 4, sampling)
    with torch.no_grad():
        entropy = entropy_from_logits(_plain(model, rows, "cpu", head=None), 0.7)
    mask = rows.completion_mask.float()
    assert got == pytest.approx(float((entropy * mask).sum() / mask.sum()), rel=1e-4)
    assert probe_entropy(engine, model, [Prompt()], cfg, 0.4, "cpu") < got


def test_target_entropy_and_an_explicit_temperature_are_refused_together(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="target_entropy picks the temperature"):
        config(tmp_path, tiny_model_dir, target_entropy=0.3, rollout={"n": 4, "temperature": 0.8})


def test_rl_samples_and_trains_at_the_picked_temperature(tmp_path, tiny_model_dir, monkeypatch):
    sampled = []
    generate = HFEngine.generate

    def recording(self, prompts, n, sampling):
        sampled.append(sampling.temperature)
        return generate(self, prompts, n, sampling)

    monkeypatch.setattr(HFEngine, "generate", recording)
    # the tiny random model's logits are nearly flat: entropy 5.90 at T = 0.3 up to ~log(400) = 5.99 at T = 1.5
    cfg = config(tmp_path, tiny_model_dir, target_entropy=5.975)
    run_rl(cfg)
    choice = json.loads((tmp_path / "run" / "temperature.json").read_text())
    probes = {float(t): h for t, h in choice["probes"].items()}
    assert choice["temperature"] in TEMPERATURES and choice["target_entropy"] == 5.975
    assert len(probes) > 2 and list(probes) == sorted(probes)
    assert choice["temperature"] == min(probes, key=lambda t: abs(probes[t] - 5.975))
    # the probes, then the 2 training steps' rollouts at the choice
    assert sampled == [*probes, choice["temperature"], choice["temperature"]] and choice["temperature"] != 1.0
    # mu = 1: the update's log-probs equal the rollout's only if both used the picked temperature
    for m in read_metrics(tmp_path / "run"):
        assert m["ratio"] == pytest.approx(1.0, abs=1e-5)
