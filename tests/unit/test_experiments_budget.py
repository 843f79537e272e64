"""The SFT/DPO annotation budget (`experiment.budget`, arms' `sft_share`): the overrides each share gives the
stages, hand-computed, and every bad input refused before anything trains."""

from __future__ import annotations

import pytest

from r1lab.config import RecipeConfig
from r1lab.errors import UserError
from r1lab.experiments.budget import split_budget
from r1lab.experiments.plan import build_plan
from r1lab.experiments.spec import parse_experiment
from r1lab.pipeline import write_task_files

STAGES = [
    {"name": "sft", "kind": "sft", "train": {"max_steps": 3}},
    {"name": "dpo", "kind": "dpo", "pairs": {"chosen": "solution", "n": 2}, "train": {"max_steps": 2}},
]
BUDGET = {"items": 40, "pair_cost": 2.0, "sft": "sft", "preference": "dpo"}
ARMS = [
    {"label": "base", "stages": []},
    {"label": "DPO-only", "stages": ["dpo"], "sft_share": 0},
    {"label": "SFT→DPO", "stages": ["sft", "dpo"], "sweep": {"key": "sft_share", "values": [0.05, 0.5]}},
    {"label": "SFT-only", "stages": ["sft"], "sft_share": 1},
]


def plan_of(tmp_path, experiment, stages=STAGES, train_size=100):
    recipe = RecipeConfig(
        name="t",
        output_dir=str(tmp_path / "run"),
        model={"path": "tiny"},
        task={"name": "countdown", "train_size": train_size, "test_size": 5},
        eval={"max_new_tokens": 8},
        stages=stages,
        experiment=experiment,
    )
    root = tmp_path / "run"
    files = write_task_files(recipe, root)
    return build_plan(recipe, parse_experiment(recipe, recipe.experiment, "r.yaml"), root, files, "r.yaml")


@pytest.mark.parametrize(
    ("share", "items", "cost", "expected"),
    [
        (0.05, 1000, 1.0, (50, 950)),
        (0.1, 1000, 1.0, (100, 900)),  # (1 - 0.1) * 1000 is 899.9999999999999 in floating point
        (0.25, 1000, 3.0, (250, 250)),  # 750 items / 3 per pair
        (0.5, 7, 1.0, (4, 3)),  # 3.5 examples round up; the 3.5 items left buy 3 whole pairs
        (0.0, 10, 0.5, (0, 20)),  # pairs cheaper than examples
        (1.0, 10, 1.0, (10, 0)),
    ],
)
def test_split_budget(share, items, cost, expected):
    assert split_budget(share, items, cost) == expected


def test_shares_become_the_stages_limits_and_offsets(tmp_path):
    plan = plan_of(tmp_path, {"arms": ARMS, "budget": BUDGET, "baseline": "SFT-only"})
    runs = {r.arm.label: r for r in plan.runs}
    assert set(runs) == {"base", "DPO-only", "SFT→DPO sft_share=0.05", "SFT→DPO sft_share=0.5", "SFT-only"}

    def configs(label):
        return [plan.nodes[k].config for k in runs[label].chain]

    assert configs("base") == []
    (dpo,) = configs("DPO-only")  # from the base model: 40 items / 2 per pair, from the first problem on
    assert plan.nodes[runs["DPO-only"].chain[0]].parent is None
    assert (dpo.pairs.offset, dpo.pairs.limit, dpo.pairs.chosen) == (0, 20, "solution")
    sft, dpo = configs("SFT→DPO sft_share=0.05")  # 2 examples; 38 items buy 19 pairs on problems 3, 4, ...
    assert (sft.data.limit, dpo.pairs.offset, dpo.pairs.limit) == (2, 2, 19)
    sft, dpo = configs("SFT→DPO sft_share=0.5")
    assert (sft.data.limit, dpo.pairs.offset, dpo.pairs.limit) == (20, 20, 10)
    (sft,) = configs("SFT-only")
    assert sft.data.limit == 40
    assert dpo.pairs.rewards == ["countdown"]  # the task's reward, filled in by the recipe
    shares = {r.arm.label: r.arm.sweep for r in plan.runs}  # every share is a point of the share plot
    assert shares["DPO-only"] == ("sft_share", 0) and shares["SFT-only"] == ("sft_share", 1)
    assert shares["SFT→DPO sft_share=0.5"] == ("sft_share", 0.5) and shares["base"] is None


def arms(*entries):
    return {"arms": list(entries), "budget": BUDGET}


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        (arms({"label": "a", "stages": ["sft"], "sft_share": 1.5}), "sft_share 1.5 is not a number between 0"),
        (arms({"label": "a", "stages": ["sft"], "sft_share": -0.1}), "not a number between 0 and 1"),
        (
            arms({"label": "a", "stages": ["sft", "dpo"], "sweep": {"key": "sft_share", "values": ["x"]}}),
            "sft_share 'x' is not a number",
        ),
        ({"arms": [{"label": "a", "stages": ["sft"], "sft_share": 1}]}, "the experiment has no budget"),
        (
            arms({"label": "a", "stages": ["sft"]}, {"label": "b", "stages": ["sft"], "sft_share": 1}),
            "trains a stage of the budget (sft or dpo) without an sft_share",
        ),
        ({"arms": [{"label": "base", "stages": []}], "budget": BUDGET}, "no arm has an sft_share"),
        (
            {"arms": ARMS, "budget": {"items": 10, "sft": "sft"}},
            "budget.preference",
        ),
        (
            {"arms": ARMS, "budget": {**BUDGET, "preference": "sft"}},
            "budget.preference names 'sft' (a sft stage), but it must be a dpo stage",
        ),
        ({"arms": ARMS, "budget": {**BUDGET, "sft": "rl"}}, "budget.sft names 'rl' (no such stage)"),
        ({"arms": ARMS, "budget": {**BUDGET, "items": 0}}, "items"),
        (arms({"label": "a", "stages": ["sft"], "sft_share": 0.5}), "path ['sft'] has no stage 'dpo' to spend the pairs on"),
        (arms({"label": "a", "stages": ["dpo"], "sft_share": 0.5}), "path ['dpo'] has no stage 'sft' to spend the SFT"),
        (arms({"label": "a", "stages": ["sft", "dpo"], "sft_share": 1}), "trains 'dpo' on 0 pairs"),
        (arms({"label": "a", "stages": ["sft", "dpo"], "sft_share": 0}), "trains 'sft' on 0 SFT examples"),
        (arms({"label": "a", "stages": ["sft", "dpo"], "sft_share": 0.01}), "buys 0 SFT examples and 19 pairs"),
        (arms({"label": "a", "stages": ["sft", "dpo"], "sft_share": 0.99}), "buys 40 SFT examples and 0 pairs"),
        (
            arms({"label": "a", "stages": ["sft"], "sft_share": 1, "overrides": {"sft.data.limit": 5}}),
            "sets sft.data.limit, which its sft_share sets",
        ),
        (
            arms({"label": "a", "stages": ["sft", "dpo"], "sft_share": 0.5, "sweep": {"key": "sft_share", "values": [1]}}),
            "sets sft_share and sweeps it",
        ),
    ],
)  # fmt: skip
def test_bad_budgets_fail_before_anything_trains(tmp_path, experiment, message):
    with pytest.raises(UserError) as err:
        plan_of(tmp_path, experiment)
    assert message in str(err.value)
    assert not (tmp_path / "run" / "stages").exists()


def test_the_task_must_have_a_distinct_problem_per_example_and_pair(tmp_path):
    with pytest.raises(
        UserError, match="needs at least 30 distinct train problems"
    ):  # 20 examples + 10 pairs
        plan_of(tmp_path, arms({"label": "a", "stages": ["sft", "dpo"], "sft_share": 0.5}), train_size=29)
    no_pairs = [STAGES[0], {**STAGES[1], "pairs": None}]
    with pytest.raises(UserError, match="has no `pairs:` section"):
        plan_of(tmp_path / "other", arms({"label": "a", "stages": ["sft"], "sft_share": 1}), stages=no_pairs)
