"""An annotation budget split between SFT examples and preference pairs (`experiment.budget` + arms' `sft_share`).

B items in all; an SFT example (a written solution) costs 1, a preference pair `pair_cost`. An arm with share s:

    sft stage:         data.limit   = round(s * B)                  (halves round up)
    preference stage:  pairs.offset = round(s * B)                  (its problems come after the SFT examples)
                       pairs.limit  = floor((1 - s) * B / pair_cost)

s = 1 is SFT-only (its path has no preference stage), s = 0 preference-only (no SFT stage: from the base model).
Every arm with a share is a point of the report's accuracy-vs-sft_share plot (r1lab.experiments.report).
Every mistake is a UserError naming the arm, raised before anything trains.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from r1lab.config import RecipeConfig
from r1lab.errors import UserError

if TYPE_CHECKING:
    from r1lab.experiments.spec import Arm, BudgetSpec

BUDGET_KEYS = {"sft": ("data.limit",), "preference": ("pairs.offset", "pairs.limit")}


def split_budget(share: float, items: int, pair_cost: float) -> tuple[int, int]:
    """(SFT examples, preference pairs) that share `share` of `items` buys."""
    sft = math.floor(share * items + 0.5)
    pairs = math.floor((1 - share) * items / pair_cost + 1e-9)  # 1e-9: (1 - 0.9) * 1000 is 99.99999999999997
    return sft, pairs


def apply_budget(
    arms: list[Arm], budget: BudgetSpec | None, entries: dict[str, dict], recipe: RecipeConfig, where: str
) -> list[Arm]:
    """Each arm with an sft_share, with the budget's data.limit / pairs.offset / pairs.limit in its changes."""
    at = f"{where}.budget"
    if budget is None:
        label = next(arm.label for arm in arms if arm.sft_share is not None)
        raise UserError(
            f"arm {label!r} has an sft_share, but the experiment has no budget to split",
            where=at,
            fix="add e.g. budget: {items: 1000, pair_cost: 1, sft: sft, preference: dpo}",
        )
    _check_stages(budget, entries, at)
    if all(arm.sft_share is None for arm in arms):
        raise UserError(
            "the experiment has a budget, but no arm has an sft_share",
            where=at,
            fix="give the arms that split it e.g. sft_share: 0.1 (or sweep: {key: sft_share, values: [...]})",
        )
    return [_arm_changes(arm, budget, entries, recipe, f"{where}.arms[{arm.label}]") for arm in arms]


def _check_stages(budget: BudgetSpec, entries: dict[str, dict], at: str) -> None:
    for role, kind in (("sft", "sft"), ("preference", "dpo")):
        name = getattr(budget, role)
        entry = entries.get(name)
        if entry is None or entry.get("kind") != kind:
            found = "no such stage" if entry is None else f"a {entry.get('kind')} stage"
            raise UserError(
                f"budget.{role} names {name!r} ({found}), but it must be a {kind} stage of this recipe",
                where=f"{at}.{role}",
                fix=f"name a {kind} stage; stages: {', '.join(map(str, entries))}",
            )
    if not isinstance(entries[budget.preference].get("pairs"), dict):
        raise UserError(
            f"the budget's preference stage {budget.preference!r} has no `pairs:` section: the budget pays for "
            "pairs it samples (pairs.limit of them, from pairs.offset on)",
            where=f"{at}.preference",
            fix=f"add to stage {budget.preference!r} e.g. pairs: {{chosen: solution, n: 4}}",
        )


def _arm_changes(
    arm: Arm, budget: BudgetSpec, entries: dict[str, dict], recipe: RecipeConfig, at: str
) -> Arm:
    on_path = {role: getattr(budget, role) in arm.path for role in ("sft", "preference")}
    share = arm.sft_share
    if share is None:
        if any(on_path.values()):
            raise UserError(
                f"arm {arm.label!r} trains a stage of the budget ({budget.sft} or {budget.preference}) without "
                "an sft_share, so its data would not be counted against the budget",
                where=at,
                fix="give it an sft_share (1: SFT-only, 0: preference-only)",
            )
        return arm
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise UserError(
            f"arm {arm.label!r}: sft_share {share!r} is not a number between 0 and 1",
            where=at,
            fix="e.g. sft_share: 0.1 (10% of the budget on SFT examples)",
        )
    sft, pairs = split_budget(share, budget.items, budget.pair_cost)
    spent = f"sft_share {share} of {budget.items} items buys {sft} SFT examples and {pairs} pairs"
    for role, stage, count, what in (
        ("sft", budget.sft, sft, "SFT examples"),
        ("preference", budget.preference, pairs, "pairs"),
    ):
        wanted = share > 0 if role == "sft" else share < 1
        if wanted and not on_path[role]:
            raise UserError(
                f"arm {arm.label!r}: {spent}, but its path {arm.path} has no stage {stage!r} to spend the "
                f"{what} on",
                where=at,
                fix=f"add {stage!r} to its stages, or set sft_share to {1 if role == 'preference' else 0}",
            )
        if on_path[role] and count == 0:
            raise UserError(
                f"arm {arm.label!r}: {spent}, but its path trains {stage!r} on 0 {what}",
                where=at,
                fix=f"raise budget.items or move the share; or drop {stage!r} from the path",
            )
    _check_train_size(arm, budget, entries, recipe, sft, pairs, at)
    changes = {name: dict(keys) for name, keys in arm.changes.items()}
    for role, values in (("sft", (sft,)), ("preference", (sft, pairs))):
        stage = getattr(budget, role)
        if not on_path[role]:
            continue
        for key, value in zip(BUDGET_KEYS[role], values, strict=True):
            if key in changes.get(stage, {}):
                raise UserError(
                    f"arm {arm.label!r} sets {stage}.{key}, which its sft_share sets from the budget",
                    where=at,
                    fix=f"remove {stage}.{key} from its overrides or sweep",
                )
            changes.setdefault(stage, {})[key] = value
    # every arm with a share is a point of the report's accuracy-vs-sft_share plot (unless it sweeps another key)
    return replace(arm, changes=changes, sweep=arm.sweep or ("sft_share", share))


def _check_train_size(
    arm: Arm, budget: BudgetSpec, entries: dict, recipe: RecipeConfig, sft: int, pairs: int, at: str
) -> None:
    """The SFT examples and the pairs' problems are distinct train problems: the task must have enough."""
    if recipe.task is None:
        return
    per_prompt = entries[budget.preference]["pairs"].get("pairs_per_prompt", 1)
    needed = sft + (math.ceil(pairs / per_prompt) if budget.preference in arm.path else 0)
    if needed > recipe.task.train_size:
        raise UserError(
            f"arm {arm.label!r} needs at least {needed} distinct train problems ({sft} SFT examples, then one "
            f"per {per_prompt} pair(s)), but task.train_size is {recipe.task.train_size}",
            where=at,
            fix=f"raise task.train_size to at least {needed}, or lower budget.items",
        )
