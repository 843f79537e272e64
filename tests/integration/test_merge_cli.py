"""`r1lab merge CONFIG.yaml OUTPUT` as a mergekit user types it: runs, refuses an existing output, overwrites."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from tiny import build_model


def test_merge_command_writes_the_model_and_refuses_to_overwrite(tmp_path, tiny_tokenizer):
    for name, seed in (("base", 0), ("ft", 1)):
        build_model(tmp_path / name, tiny_tokenizer, seed=seed)
    config = tmp_path / "ties.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            merge_method: ties
            base_model: {tmp_path / "base"}
            models:
              - model: {tmp_path / "ft"}
                parameters: {{weight: 1.0}}
            parameters: {{density: 1.0, lambda: 0.5}}
            """
        )
    )
    command = [sys.executable, "-m", "r1lab.cli", "merge", str(config), str(tmp_path / "out")]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    base = load_file(tmp_path / "base" / "model.safetensors")
    ft = load_file(tmp_path / "ft" / "model.safetensors")
    out = load_file(tmp_path / "out" / "model.safetensors")
    for name in base:  # one model, density 1: base + 0.5 Δ
        torch.testing.assert_close(out[name], (base[name] + ft[name]) / 2, rtol=0, atol=1e-6)
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    forced = subprocess.run(
        [*command, "parameters.lambda=1.0", "--overwrite"], capture_output=True, text=True
    )
    assert forced.returncode == 0, forced.stderr
    torch.testing.assert_close(load_file(tmp_path / "out" / "model.safetensors"), ft, rtol=0, atol=1e-6)
