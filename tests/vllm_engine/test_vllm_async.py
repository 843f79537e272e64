"""rollout.async with the vLLM engine: vLLM generates in the producer thread while the trainer updates, each
batch from the weights pushed one update earlier (fingerprints of the pushed weights vs the trainer's before
each update), and the toy task of tests/unit/test_rl.py is still learned."""

from __future__ import annotations

import json

import pytest
from rl_testkit import read_metrics, rl_config, single_thread

from r1lab.stages import rl as rl_stage
from r1lab.stages.rl import run_rl

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def _fingerprint(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_async_vllm_samples_one_update_old_and_learns(tmp_path, vllm_model_dir, monkeypatch):
    from r1lab.rollout.vllm import VLLMEngine

    pushed, generated, trained = [], [], []
    update, generate, updates = VLLMEngine.update_weights, VLLMEngine.generate, rl_stage.optimizer_updates

    def recording_update(self, model):
        pushed.append(_fingerprint(model))
        return update(self, model)

    def recording_generate(self, *args):
        generated.append(pushed[-1])  # the weights vLLM holds now
        return generate(self, *args)

    def recording_updates(model, *args):
        trained.append(_fingerprint(model))
        return updates(model, *args)

    monkeypatch.setattr(VLLMEngine, "update_weights", recording_update)
    monkeypatch.setattr(VLLMEngine, "generate", recording_generate)
    monkeypatch.setattr(rl_stage, "optimizer_updates", recording_updates)
    steps = 30
    cfg = rl_config(
        tmp_path,
        vllm_model_dir,
        {
            "rollout": {"engine": "vllm", "n": 8, "max_new_tokens": 6, "async": True},
            "prompts_per_step": 4,
            "optim": {"lr": 1e-2},
            "train": {"max_steps": steps, "batch_size": 16},
            "samples_every": 10,
        },
    )
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert [m["async/staleness"] for m in metrics] == [0] + [1] * (steps - 1)
    # batch 1 from the initial weights, batch k > 1 from the weights after k - 2 updates (trained[k - 2])
    assert generated == [trained[0], *trained[: steps - 1]]
    first = sum(m["reward/mean"] for m in metrics[:5]) / 5
    last = sum(m["reward/mean"] for m in metrics[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["status"] == "complete"
