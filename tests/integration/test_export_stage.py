"""`kind: export` as a recipe step: it writes the model it is given, is not evaluated, and the next stage goes on
from that model; bad uses are refused before anything trains."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_recipe_cli import STAGES, r1lab, recipe

from r1lab.config import ExportConfig
from r1lab.models.export import QUANTS

SFT = STAGES[0]


def _weights(folder) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out |= load_file(shard)
    return out


def test_an_export_step_writes_the_stage_model_and_the_next_stage_goes_on_from_that_model(
    tmp_path, tiny_model_dir
):
    stages = [SFT, {"name": "export", "kind": "export", "to": "hf"}, {**STAGES[1], "name": "rl"}]
    path = recipe(tmp_path, tiny_model_dir, stages=stages)
    first = r1lab("run", str(path))
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    state = json.loads((run / "pipeline.json").read_text())
    sft_model = state["stages"]["sft"]["model"]
    export = state["stages"]["export"]
    assert export["status"] == "complete" and export["input"] == sft_model and export["model"] == sft_model
    assert state["stages"]["rl"]["input"] == sft_model  # RL trains from the SFT model, not from the export
    exported = run / "export" / "hf"
    assert export["exported"] == str(exported)
    got, want = _weights(exported), _weights(run / "sft" / "final")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert "export" not in state["evals"]  # the same weights as sft, already evaluated
    assert (exported / "README.md").is_file()  # the model card

    again = r1lab("run", str(path))
    assert again.returncode == 0, again.stderr
    assert "stage export: finished earlier, skipped" in again.stderr


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"to": "hf", "output": "elsewhere"}, "writes into its own stage folder"),
        ({"to": "hf", "model": {"path": "m"}}, "writes the model it is given"),
        ({"to": "hf", "quant": "q8_0"}, "`quant` applies to `to: gguf` only"),
        ({"to": "gguf", "quant": "q3"}, "quant"),
        ({"to": "onnx"}, "to"),
    ],
)
def test_bad_export_steps_are_refused_before_training(tmp_path, tiny_model_dir, entry, message):
    path = recipe(tmp_path, tiny_model_dir, stages=[SFT, {"name": "export", "kind": "export", **entry}])
    out = r1lab("run", str(path))
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert not (tmp_path / "run" / "sft").exists()  # refused before the SFT stage trained


def test_an_experiment_arm_cannot_chain_an_export(tmp_path, tiny_model_dir):
    stages = [SFT, {"name": "export", "kind": "export", "to": "hf", "input": "sft"}]
    experiment = {
        "arms": [{"label": "sft", "stages": ["sft"]}, {"label": "exported", "stages": ["sft", "export"]}]
    }
    path = recipe(tmp_path, tiny_model_dir, stages=stages, experiment=experiment)
    out = r1lab("run", str(path))
    assert out.returncode == 2, out.stderr
    assert "stage 'export' (export) cannot be in an arm: arms chain training and merge stages" in out.stderr


def test_the_quant_names_of_the_config_are_the_exporters():
    assert set(ExportConfig.model_fields["quant"].annotation.__args__) == set(QUANTS)
    assert yaml.safe_dump(ExportConfig(to="gguf").model_dump())  # a resolved export step dumps as YAML
