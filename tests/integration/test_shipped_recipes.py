"""Every recipe in recipes/ validates as a user would run it: stages, evaluation and experiment, before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r1lab.experiments.plan import build_plan
from r1lab.experiments.spec import parse_experiment
from r1lab.pipeline import eval_config, load_recipe, resolve_stages, write_task_files
from r1lab.training.accel import resolve_precision

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


def test_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= {"quickstart.yaml", "quickstart-seeds.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path, tmp_path):
    recipe = load_recipe(path, [f"output_dir={tmp_path}"])
    files = write_task_files(recipe, tmp_path)
    assert eval_config(recipe, files) is not None
    if recipe.experiment is None:
        stages = resolve_stages(recipe, tmp_path, files, path)
        assert [s.config.kind for s in stages] == [s["kind"] for s in recipe.stages]
        configs = [s.config for s in stages]
    else:
        plan = build_plan(recipe, parse_experiment(recipe, recipe.experiment, path), tmp_path, files, path)
        configs = [node.config for node in plan.nodes.values()]
    assert configs
    for cfg in (c for c in configs if hasattr(c, "train")):  # a metis step trains nothing
        resolve_precision(cfg.train.precision, torch.device("cpu"))
