"""The budget study's machinery end to end on the tiny model (as recipes/budget-study.yaml, scaled down): a budget
of 8 items split at two SFT shares and at 0 (DPO-only from base), one seed. Each stage sees the number of items its
share buys, on distinct problems, and each DPO stage's pairs are sampled from its own input model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import r1lab.stages.dpo as dpo_stage
import r1lab.stages.sft as sft_stage
from r1lab.experiments.engine import run_recipe_file

BUDGET = {"items": 8, "pair_cost": 1.0, "sft": "sft", "preference": "dpo"}


def test_budget_experiment_spends_each_share_on_its_stages(tmp_path, tiny_model_dir, monkeypatch):
    recipe = {
        "name": "budget-tiny",
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(tiny_model_dir)},
        "task": {"name": "countdown", "train_size": 16, "test_size": 4},
        "eval": {"max_new_tokens": 8, "batch_size": 4},
        "stages": [
            {"name": "sft", "kind": "sft", "data": {"max_length": 400}, "train": {"epochs": 1, "batch_size": 2}},
            {"name": "dpo", "kind": "dpo", "pairs": {"chosen": "solution", "n": 2, "max_new_tokens": 8},
             "data": {"max_length": 400}, "train": {"epochs": 1, "batch_size": 2}},
        ],
        "experiment": {
            "budget": BUDGET,
            "seeds": [0],
            "arms": [
                {"label": "DPO-only", "stages": ["dpo"], "sft_share": 0},
                {"label": "SFT→DPO", "stages": ["sft", "dpo"], "sweep": {"key": "sft_share", "values": [0.25, 0.5]}},
            ],
        },
    }  # fmt: skip
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    seen: dict[str, list[int]] = {"sft": [], "dpo": []}
    for module, name, kind in (
        (sft_stage, "build_sft_dataset", "sft"),
        (dpo_stage, "build_preference_dataset", "dpo"),
    ):
        real = getattr(module, name)

        def recording(*args, _real=real, _kind=kind, **kwargs):
            dataset = _real(*args, **kwargs)
            seen[_kind].append(len(dataset))
            return dataset

        monkeypatch.setattr(module, name, recording)  # fmt: skip

    root = run_recipe_file(path)
    assert sorted(seen["sft"]) == [2, 4]  # round(0.25 * 8), round(0.5 * 8) written solutions
    assert sorted(seen["dpo"]) == [4, 6, 8]  # the rest of the 8 items, one per pair

    problems = [json.loads(line) for line in (root / "data" / "train.jsonl").read_text().splitlines()]
    index = json.loads((root / "pipeline.json").read_text())
    stages = {entry["dir"]: entry for entry in index["stages"].values()}
    arms = {arm["label"]: arm["runs"][0]["chain"] for arm in index["experiment"]["arms"]}
    assert set(arms) == {"DPO-only", "SFT→DPO sft_share=0.25", "SFT→DPO sft_share=0.5"}
    for label, sft_items in (("DPO-only", 0), ("SFT→DPO sft_share=0.25", 2), ("SFT→DPO sft_share=0.5", 4)):
        chain = arms[label]
        dpo_dir = chain[-1]
        rows = [json.loads(line) for line in Path(dpo_dir, "pairs.jsonl").read_text().splitlines()]
        assert len(rows) == 8 - sft_items
        # the problems after the SFT examples, each paired with its written solution
        assert [r["chosen"] for r in rows] == [p["completion"] for p in problems[sft_items:8]]
        source = stages[chain[0]]["model"] if len(chain) == 2 else str(tiny_model_dir)
        assert stages[dpo_dir]["input"] == source
        assert {r["sampling"]["model"] for r in rows} == {source}  # sampled from the stage's input model
        if len(chain) == 2:
            sft_config = yaml.safe_load(Path(chain[0], "config.yaml").read_text())
            assert sft_config["data"]["limit"] == sft_items
    report = (root / "results.md").read_text()
    assert "sft_share" in report  # the accuracy-vs-share table
