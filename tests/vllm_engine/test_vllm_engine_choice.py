"""`engine: auto` where vLLM is installed: it picks vLLM for an architecture vLLM knows, falls back to the HF
engine (saying why) for one it does not, and an RL run with auto trains on vLLM and records it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rl_testkit import rl_config, single_thread

from r1lab.config import RolloutConfig
from r1lab.rollout.engine_choice import choose_engine
from r1lab.stages.rl import run_rl

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_auto_picks_vllm_for_a_llama_and_hf_for_an_architecture_vllm_does_not_know(model):
    assert choose_engine(RolloutConfig(engine="auto"), model) == (
        "vllm",
        "vllm is installed and supports LlamaForCausalLM",
    )
    unknown = SimpleNamespace(config=SimpleNamespace(architectures=["R1labToyForCausalLM"], model_type="toy"))
    engine, why = choose_engine(RolloutConfig(engine="auto"), unknown)
    assert engine == "hf" and "does not support the architecture R1labToyForCausalLM" in why


def test_an_rl_run_with_auto_trains_on_vllm_and_records_it(tmp_path, vllm_model_dir, capsys):
    cfg = rl_config(tmp_path, vllm_model_dir, {"rollout": {"engine": "auto"}, "train": {"max_steps": 1}})
    run_rl(cfg)
    assert "rollout.engine: auto -> vllm" in capsys.readouterr().out
    written = yaml.safe_load((Path(cfg.train.output_dir) / "config.yaml").read_text())
    assert written["rollout"]["engine"] == "vllm"
