"""An RL run with rollout.engine: vllm and algorithm.rollout_correction: every step logs the mismatch and the
fraction of tokens whose weight was truncated; pi_old is the trainer's recomputation (the mu == 1 ratio is 1
to float rounding, whatever vLLM's numerics) and the weights stay ~1 (vLLM and the trainer agree to ~1e-6 in
fp32 on this model). A run with a top_p filter is refused before vLLM starts (TRL #6789)."""

from __future__ import annotations

import json

import pytest
from rl_testkit import read_metrics, rl_config, single_thread

from r1lab.errors import UserError
from r1lab.stages.rl import run_rl

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_rl_with_vllm_and_token_tis_logs_the_clipped_fraction(tmp_path, vllm_model_dir):
    cfg = rl_config(
        tmp_path,
        vllm_model_dir,
        {
            "rollout": {"engine": "vllm", "n": 4, "max_new_tokens": 6},
            # threshold 1: every token whose trainer/vLLM ratio is above 1 (rounding) is truncated
            "algorithm": {"rollout_correction": {"mode": "tis", "level": "token", "threshold": 1.0}},
            "train": {"max_steps": 3, "batch_size": 8},
            "rewards": [{"name": f"{tmp_path / 'user_rewards.py'}:length"}],  # dense: every step trains
        },
    )
    run_rl(cfg)
    metrics = [m for m in read_metrics(tmp_path / "run") if m["tokens_trained"]]
    assert metrics
    for m in metrics:
        assert 0.0 <= m["mismatch/clipped_fraction"] <= 1.0, m
        assert m["mismatch/weight_mean"] == pytest.approx(1.0, abs=1e-3)
        assert m["mismatch/kl"] < 1e-6 and m["mismatch/ratio_max"] < 1.01
        assert m["ratio"] == pytest.approx(1.0, abs=1e-5)  # pi_old: the trainer's own log-probs
    print("clipped fractions:", [m["mismatch/clipped_fraction"] for m in metrics])
    assert json.loads((tmp_path / "run" / "state.json").read_text())["status"] == "complete"


def test_a_top_p_filter_with_vllm_is_refused_before_the_engine_starts(tmp_path, vllm_model_dir):
    cfg = rl_config(tmp_path, vllm_model_dir, {"rollout": {"engine": "vllm", "top_p": 0.9}})
    with pytest.raises(UserError, match="kept probability mass"):
        run_rl(cfg)
    assert not (tmp_path / "run").exists()
