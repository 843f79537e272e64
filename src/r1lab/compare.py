"""The comparison the cold-start papers make: base vs SFT-only vs RL-only vs SFT→RL, from one SFT→RL recipe.

SFT-only and SFT→RL share the SFT checkpoint; RL-only is the recipe's RL stage started from the base model with the
same RL budget. All arms are evaluated on the same held-out set; the results go to `results.md` and `report.html`.
"""

from __future__ import annotations

from pathlib import Path

from r1lab.config import RecipeConfig
from r1lab.errors import UserError
from r1lab.pipeline import PipelineState, execute, load_recipe


def comparison_recipe(recipe: RecipeConfig, source: str | Path) -> tuple[RecipeConfig, dict[str, str]]:
    """Return the recipe extended with an RL-only stage, and the arm -> stage-name map."""
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
    sft, rl = by_kind["sft"], by_kind["rl"]
    rl_only = {**rl, "name": f"{rl['name']}-only", "input": "base"}
    stages = [{**sft, "input": "base"}, {**rl, "input": sft["name"]}, rl_only]
    arms = {"base": "base", "SFT-only": sft["name"], "RL-only": rl_only["name"], "SFT→RL": rl["name"]}
    return recipe.model_copy(update={"stages": stages}), arms


def compare(path: str | Path, overrides: list[str] | None = None) -> Path:
    from r1lab.report import write_report

    recipe, arms = comparison_recipe(load_recipe(path, overrides), path)
    root = execute(recipe, path)
    write_report(root, PipelineState(root).data, arms)
    return root
