"""`r1lab eval --engine vllm`: the same greedy completions, scores and accuracy as the HF engine's eval."""

from __future__ import annotations

import json

import pytest
from rl_testkit import write_inputs
from typer.testing import CliRunner

from r1lab.cli import app

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def test_eval_with_the_vllm_engine_matches_the_hf_engine(tmp_path, vllm_model_dir):
    data, rewards = write_inputs(tmp_path, n_prompts=6)
    results = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / engine
        args = [
            "eval",
            str(vllm_model_dir),
            "--data",
            str(data),
            "-r",
            f"{rewards}:length",
            "--engine",
            engine,
        ]
        result = CliRunner().invoke(app, [*args, "--max-new-tokens", "12", "--out", str(out)])
        assert result.exit_code == 0, result.output
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        results[engine] = (json.loads((out / "results.json").read_text()), samples)
    (hf_metrics, hf_samples), (vllm_metrics, vllm_samples) = results["hf"], results["vllm"]
    assert len(vllm_samples) == 6 and any(s["completion"] for s in vllm_samples)
    assert [s["completion"] for s in vllm_samples] == [s["completion"] for s in hf_samples]
    assert vllm_metrics["mean_reward"] == pytest.approx(hf_metrics["mean_reward"])
