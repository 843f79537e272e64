"""`engine: auto`: which engine it picks and why, what it refuses at validation, and a run that uses it.

In the main venv vllm is not installed, so auto must fall back to the HF engine and say so; the vLLM side
(auto picks vllm, an unknown architecture falls back) is tests/vllm_engine/test_vllm_engine_choice.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rl_testkit import rl_config, single_thread
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.config import RolloutConfig
from r1lab.rollout.engine_choice import choose_engine, resolve_engine
from r1lab.stages.rl import run_rl

NO_VLLM = importlib.util.find_spec("vllm") is None
LLAMA = SimpleNamespace(config=SimpleNamespace(architectures=["LlamaForCausalLM"], model_type="llama"))


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.mark.parametrize(
    ("settings", "training", "sharded", "reason"),
    [
        ({"tools": ["calculator"]}, False, False, "rollout.tools"),
        ({}, True, True, "fsdp2"),
        ({"top_p": 0.9, "top_k": 20}, True, False, "top_p, top_k: vLLM's log-probs"),
    ],
)
def test_settings_only_the_hf_engine_supports_pick_it_before_vllm_is_even_looked_for(
    settings, training, sharded, reason
):
    engine, why = choose_engine(
        RolloutConfig(engine="auto", **settings), LLAMA, training=training, sharded=sharded
    )
    assert engine == "hf" and reason in why


def test_top_p_outside_training_does_not_rule_out_vllm():
    # eval and data generation use vLLM's samples, not its log-probs: the filter is harmless there
    _, why = choose_engine(RolloutConfig(engine="auto", top_p=0.9), LLAMA, training=False)
    assert "top_p" not in why


@pytest.mark.skipif(not NO_VLLM, reason="vllm is installed here")
def test_without_vllm_auto_is_hf_and_says_how_to_get_vllm(capsys):
    resolved = resolve_engine(RolloutConfig(engine="auto"), LLAMA)
    assert resolved.engine == "hf"
    assert (
        "rollout.engine: auto -> hf (vllm is not installed here (`make test-vllm`" in capsys.readouterr().out
    )


def test_explicit_engines_are_left_as_they_are(capsys):
    assert resolve_engine(RolloutConfig(engine="hf"), LLAMA).engine == "hf"
    assert resolve_engine(RolloutConfig(engine="vllm"), LLAMA).engine == "vllm"
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"rollout": {"engine": "auto", "gpu_memory_utilization": 0.3}}, "read only by the vllm engine"),
        ({"rollout": {"engine": "auto", "vllm_mode": "server"}}, "read only by the vllm engine"),
        (
            {"rollout": {"engine": "auto"}, "algorithm": {"rollout_correction": {"mode": "tis"}}},
            "auto (it may fall back to hf) without rollout.async",
        ),
    ],
)
def test_vllm_only_settings_with_auto_are_refused_so_a_fallback_drops_nothing(
    tmp_path, tiny_model_dir, overrides, phrase
):
    with pytest.raises(Exception, match="rollout") as info:
        rl_config(tmp_path, tiny_model_dir, overrides)
    assert phrase in str(info.value)


def test_auto_with_tools_passes_validation_because_it_picks_hf(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"engine": "auto", "tools": ["calculator"]}})
    assert choose_engine(cfg.rollout, LLAMA, training=True)[0] == "hf"


@pytest.mark.skipif(not NO_VLLM, reason="vllm is installed here")
def test_an_rl_run_with_auto_trains_on_the_hf_engine_and_records_it(tmp_path, tiny_model_dir, capsys):
    cfg = rl_config(tmp_path, tiny_model_dir, {"rollout": {"engine": "auto"}, "train": {"max_steps": 1}})
    run_rl(cfg)
    assert "rollout.engine: auto -> hf" in capsys.readouterr().out
    written = yaml.safe_load((Path(cfg.train.output_dir) / "config.yaml").read_text())
    assert written["rollout"]["engine"] == "hf"  # what ran, not what was asked


@pytest.mark.skipif(not NO_VLLM, reason="vllm is installed here")
def test_eval_engine_auto_generates_with_hf(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", str(tiny_model_dir), "--task", "countdown", "--limit", "2", "--max-new-tokens", "4"]
    result = CliRunner().invoke(app, [*args, "--engine", "auto", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "auto -> hf" in result.output
    assert json.loads((out / "results.json").read_text())["num_problems"] == 2


@pytest.mark.skipif(not NO_VLLM, reason="vllm is installed here")
def test_distill_with_auto_records_the_engine_that_ran(tmp_path, tiny_model_dir):
    from r1lab.data.jsonl import write_jsonl
    from r1lab.stages.distill import DistillOptions, distill

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Write about {w}.", "answer": w} for w in "ab"])
    rewards = tmp_path / "checks.py"
    rewards.write_text("def anything(completion, **columns):\n    return 1.0\n")
    opts = DistillOptions(model=str(tiny_model_dir), out=tmp_path / "sft.jsonl", data=str(prompts),
                          rewards=[f"{rewards}:anything"], k=2, m=1, max_new_tokens=4, engine="auto")  # fmt: skip
    distill(opts)
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert rows and {r["provenance"]["engine"] for r in rows} == {"hf"}
