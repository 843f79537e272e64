"""The comparison the cold-start papers make: base vs SFT-only vs RL-only vs SFT→RL, from one SFT→RL recipe.

It is one built-in expansion of an experiment: SFT-only and SFT→RL share the SFT node (trained once); RL-only is
the recipe's RL stage started from the base model with the same RL budget. The recipe's `experiment:` section may
set `seeds` and `baseline` (default: base), e.g. `r1lab compare recipe.yaml "experiment.seeds=[0,1,2]"`; the
arms are fixed. The results go to `results.md` and `report.html`.
"""

from __future__ import annotations

from pathlib import Path

from r1lab.config import RecipeConfig
from r1lab.errors import UserError
from r1lab.experiments.engine import run_experiment
from r1lab.experiments.spec import parse_experiment
from r1lab.pipeline import load_recipe

ARM_LABELS = ("base", "SFT-only", "RL-only", "SFT→RL")


def comparison_recipe(recipe: RecipeConfig, source: str | Path) -> RecipeConfig:
    """The recipe with an RL-only stage (the RL stage from base) and the four arms as its experiment."""
    if recipe.eval is None:
        raise UserError(
            "a comparison needs an `eval:` section", where=str(source), fix="add e.g. eval: {limit: 500}"
        )
    by_kind: dict[str, dict] = {}
    for entry in recipe.stages:
        by_kind.setdefault(entry.get("kind"), entry)
    if "sft" not in by_kind or "rl" not in by_kind:
        raise UserError(
            "a comparison needs a recipe with an `sft` stage followed by an `rl` stage",
            where=str(source),
            fix="see recipes/quickstart.yaml",
        )
    given = dict(recipe.experiment or {})
    if "arms" in given:
        raise UserError(
            "`r1lab compare` builds its own four arms; this recipe's experiment names arms",
            where=f"{source}: experiment.arms",
            fix="run it with `r1lab run` (its arms), or remove `arms` to compare the classic four",
        )
    sft, rl = by_kind["sft"], by_kind["rl"]
    rl_only = {**rl, "name": f"{rl['name']}-only", "input": "base"}
    stages = [{**sft, "input": "base"}, {**rl, "input": sft["name"]}, rl_only]
    paths = ([], [sft["name"]], [rl_only["name"]], [sft["name"], rl["name"]])
    arms = [{"label": label, "stages": path} for label, path in zip(ARM_LABELS, paths, strict=True)]
    return recipe.model_copy(update={"stages": stages, "experiment": {**given, "arms": arms}})


def compare(path: str | Path, overrides: list[str] | None = None, jobs: int = 1, ray: bool = False) -> Path:
    recipe = comparison_recipe(load_recipe(path, overrides), path)
    return run_experiment(recipe, path, parse_experiment(recipe, recipe.experiment, path), jobs, ray)
