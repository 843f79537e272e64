"""The RL stage with rollout.engine: vllm on the toy task of tests/unit/test_rl.py (reward 1 when the
completion contains "7"): it learns, and every step's rollout log-probs are those of the weights the update
starts from (the mu == 1 ratio is 1), which holds only if the weights reach vLLM after each step."""

from __future__ import annotations

import json

import pytest
from rl_testkit import read_metrics, rl_config, single_thread

from r1lab.stages.rl import run_rl

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_rl_with_the_vllm_engine_learns_the_toy_task(tmp_path, vllm_model_dir):
    steps = 30
    cfg = rl_config(
        tmp_path,
        vllm_model_dir,
        {
            "rollout": {"engine": "vllm", "n": 8, "max_new_tokens": 6},
            "prompts_per_step": 4,
            "optim": {"lr": 1e-2},
            "train": {"max_steps": steps, "batch_size": 16},
            "samples_every": 10,
        },
    )
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    assert all(m["skipped_steps"] == 0 for m in metrics)
    # pi_old = vLLM's log-probs; the trainer's at the same weights agree to ~1e-6, so the ratio is 1
    for m in metrics:
        if m["tokens_trained"]:
            assert m["ratio"] == pytest.approx(1.0, abs=1e-3), m
            # the logged sampler/trainer mismatch, before each update, over every trained token
            assert (
                m["mismatch/kl"] < 1e-6 and 0.99 < m["mismatch/ratio_min"] <= m["mismatch/ratio_max"] < 1.01
            )
    first = sum(m["reward/mean"] for m in metrics[:5]) / 5
    last = sum(m["reward/mean"] for m in metrics[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["status"] == "complete"
