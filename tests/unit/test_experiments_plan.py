"""Experiment plans without training: arm expansion, sweeps, node keys (dedup), and every bad input."""

from __future__ import annotations

import pytest

from r1lab.config import RecipeConfig
from r1lab.errors import UserError
from r1lab.experiments.compare import comparison_recipe
from r1lab.experiments.engine import stage_entry
from r1lab.experiments.plan import build_plan, display_names
from r1lab.experiments.spec import parse_experiment
from r1lab.pipeline import write_task_files

STAGES = [
    {"name": "sft", "kind": "sft", "optim": {"lr": 1e-3}, "train": {"max_steps": 3}},
    {"name": "rl", "kind": "rl", "rollout": {"n": 4}, "train": {"max_steps": 2}},
]
ARMS = [
    {"label": "base", "stages": []},
    {"label": "SFT-only", "stages": ["sft"]},
    {"label": "SFT→RL", "stages": ["sft", "rl"]},
]


def make_recipe(tmp_path, experiment=None, stages=STAGES) -> RecipeConfig:
    return RecipeConfig(
        name="t",
        output_dir=str(tmp_path / "run"),
        model={"path": "tiny"},
        task={"name": "addition", "train_size": 20, "test_size": 5},
        eval={"max_new_tokens": 8},
        stages=stages,
        experiment=experiment,
    )


def plan_of(tmp_path, experiment, stages=STAGES):
    recipe = make_recipe(tmp_path, experiment, stages)
    root = tmp_path / "run"
    files = write_task_files(recipe, root)
    return build_plan(recipe, parse_experiment(recipe, recipe.experiment, "r.yaml"), root, files, "r.yaml")


def test_shared_prefix_is_one_node_per_seed(tmp_path):
    plan = plan_of(tmp_path, {"arms": ARMS, "baseline": "SFT-only", "seeds": [0, 1]})
    assert sorted(n.name for n in plan.nodes.values()) == ["rl", "rl", "sft", "sft"]  # not 3 SFTs per seed
    by_arm = {(r.arm.label, r.seed): r for r in plan.runs}
    assert by_arm["SFT-only", 0].chain[0] == by_arm["SFT→RL", 0].chain[0]  # SFT shared
    assert by_arm["SFT-only", 0].chain[0] != by_arm["SFT-only", 1].chain[0]  # seeds differ
    assert by_arm["base", 0].eval_key == by_arm["base", 1].eval_key  # the base model: evaluated once
    assert plan.nodes[by_arm["SFT→RL", 1].chain[1]].config.train.seed == 1
    assert sorted(display_names(plan).values()) == ["rl@seed0", "rl@seed1", "sft@seed0", "sft@seed1"]
    sft_dir = plan.nodes[by_arm["SFT-only", 0].chain[0]].dir
    assert sft_dir.parent == tmp_path / "run" / "stages" and sft_dir.name.startswith("sft-")


def test_changing_one_key_changes_only_that_stage_and_what_follows(tmp_path):
    first = plan_of(tmp_path, {"arms": ARMS})
    rl_changed = [STAGES[0], {**STAGES[1], "rollout": {"n": 2}}]
    second = plan_of(tmp_path, {"arms": ARMS}, rl_changed)
    sft_changed = [{**STAGES[0], "optim": {"lr": 5e-4}}, STAGES[1]]
    third = plan_of(tmp_path, {"arms": ARMS}, sft_changed)
    chains = [{r.arm.label: r.chain for r in p.runs} for p in (first, second, third)]
    assert chains[1]["SFT-only"] == chains[0]["SFT-only"]  # RL changed: SFT node and its eval kept
    assert chains[1]["SFT→RL"][1] != chains[0]["SFT→RL"][1]
    assert chains[2]["SFT-only"] != chains[0]["SFT-only"]  # SFT changed: it and the RL after it are new
    assert chains[2]["SFT→RL"][1] != chains[0]["SFT→RL"][1]
    # the output folder and run-only settings do not enter the key
    logged = [{**STAGES[0], "train": {**STAGES[0]["train"], "resume": True}}, STAGES[1]]
    assert {r.arm.label: r.chain for r in plan_of(tmp_path, {"arms": ARMS}, logged).runs} == chains[0]


def test_compare_expansion_shares_sft_and_starts_rl_only_from_base(tmp_path):
    recipe = comparison_recipe(make_recipe(tmp_path, {"seeds": [3]}), "r.yaml")
    exp = parse_experiment(recipe, recipe.experiment, "r.yaml")
    assert [a.label for a in exp.arms] == ["base", "SFT-only", "RL-only", "SFT→RL"]
    assert exp.baseline == "base" and exp.seeds == [3]
    files = write_task_files(recipe, tmp_path / "run")
    plan = build_plan(recipe, exp, tmp_path / "run", files, "r.yaml")
    assert len(plan.nodes) == 3  # sft, rl (after sft), rl-only (from base)
    names = display_names(plan)
    assert sorted(names.values()) == ["rl", "rl-only", "sft"]
    rl_only = next(n for n in plan.nodes.values() if n.name == "rl-only")
    assert rl_only.parent is None


def test_stage_arm_follows_inputs_and_sweep_expands(tmp_path):
    arms = [
        {"label": "SFT-only", "stage": "sft"},
        {"label": "lr", "stage": "rl", "sweep": {"key": "sft.optim.lr", "values": [1e-4, 3e-4, 1e-3]}},
    ]
    plan = plan_of(tmp_path, {"arms": arms})
    labels = [r.arm.label for r in plan.runs]
    assert labels == ["SFT-only", "lr lr=0.0001", "lr lr=0.0003", "lr lr=0.001"]
    runs = {r.arm.label: r for r in plan.runs}
    assert [plan.nodes[k].name for k in runs["lr lr=0.0003"].chain] == ["sft", "rl"]
    assert plan.nodes[runs["lr lr=0.0003"].chain[0]].config.optim.lr == 3e-4
    assert runs["lr lr=0.001"].chain[0] == runs["SFT-only"].chain[0]  # lr 1e-3 is the recipe's own SFT
    assert len(plan.nodes) == 1 + 2 + 3  # SFT at 3 lrs (one shared with SFT-only), an RL after each
    assert runs["lr lr=0.0001"].arm.sweep == ("sft.optim.lr", 1e-4)


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        ({"arms": [{"label": "a", "stages": ["sft", "ppo"]}]}, "unknown stage 'ppo'"),
        ({"arms": [{"label": "a", "stages": ["sfft"]}]}, "did you mean 'sft'?"),
        ({"arms": [{"label": "a", "stages": ["sft", "rl", "sft"]}]}, "(a cycle)"),
        ({"arms": [{"label": "a", "stage": "rl"}]}, "the stage inputs form a cycle: rl -> sft -> rl"),
        (
            {"arms": [{"label": "a", "stages": ["sft"], "sweep": {"key": "sft.optim.lrr", "values": [1]}}]},
            "did you mean 'sft.optim.lr'?",
        ),
        (
            {"arms": [{"label": "a", "stages": ["sft"], "sweep": {"key": "rl.optim.lr", "values": [1]}}]},
            "does not start with a stage of this arm",
        ),
        ({"arms": ARMS, "baseline": "SFT-onyl"}, "did you mean 'SFT-only'?"),
        ({"arms": ARMS, "seeds": [0, 1.5]}, "seed 1.5 is not an integer"),
        ({"arms": ARMS, "seeds": ["1"]}, "seed '1' is not an integer"),
        ({"arms": [*ARMS, {"label": "base", "stages": ["sft"]}]}, "two arms are labelled 'base'"),
        (
            {
                "arms": [
                    {"label": "x", "stages": ["sft"], "sweep": {"key": "sft.train.seed", "values": [1, 1]}}
                ]
            },
            "two arms are labelled 'x seed=1'",
        ),
        ({"arms": [{"label": "a"}]}, "either `stages: [...]`"),
        ({"arms": [{"label": "a", "stages": ["sft"], "sweeps": {}}]}, "did you mean 'sweep'?"),
        (
            {"arms": [{"label": "a", "stages": ["sft"], "overrides": {"sft.optim.lr": "fast"}}]},
            "optim.lr",
        ),
    ],
)
def test_bad_experiments_fail_before_anything_trains(tmp_path, experiment, message):
    stages = STAGES
    if "cycle: rl" in message:
        stages = [{**STAGES[0], "input": "rl"}, STAGES[1]]
    with pytest.raises(UserError) as err:
        plan_of(tmp_path, experiment, stages)
    assert message in str(err.value)
    assert not (tmp_path / "run" / "stages").exists()


def test_compare_refuses_a_recipe_with_its_own_arms(tmp_path):
    with pytest.raises(UserError, match="builds its own four arms"):
        comparison_recipe(make_recipe(tmp_path, {"arms": ARMS}), "r.yaml")


def test_run_flags_that_do_not_apply_are_refused(tmp_path):
    import yaml

    from r1lab.experiments.engine import run_recipe_file

    plain = make_recipe(tmp_path).model_dump(exclude={"experiment"})
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    with pytest.raises(UserError, match="no `experiment:`"):
        run_recipe_file(tmp_path / "plain.yaml", jobs=2)
    (tmp_path / "exp.yaml").write_text(
        yaml.safe_dump({**plain, "experiment": {"arms": ARMS}}, allow_unicode=True)
    )
    with pytest.raises(UserError, match="--from applies to a recipe without `experiment:`"):
        run_recipe_file(tmp_path / "exp.yaml", from_stage="rl")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_stage_under_another_name_reuses_the_folder_of_the_same_key(tmp_path):
    # e.g. `r1lab compare`'s rl-only and an experiment's RL-from-base arm in the same run folder
    first = plan_of(tmp_path, {"arms": [{"label": "RL", "stages": ["rl"]}]})
    (node,) = first.nodes.values()
    node.dir.mkdir(parents=True)  # what training leaves behind
    renamed = [STAGES[0], {**STAGES[1], "name": "rl-only"}]
    second = plan_of(tmp_path, {"arms": [{"label": "RL-only", "stages": ["rl-only"]}]}, renamed)
    (again,) = second.nodes.values()
    assert again.key == node.key and again.dir == node.dir and again.name == "rl-only"


MERGE = {
    "name": "wise",
    "kind": "merge",
    "merge_method": "wise_ft",
    "base_model": "base",
    "models": [{"model": "sft"}],
}


def test_a_merge_node_is_keyed_by_the_arm_stages_it_names(tmp_path):
    arms = [
        {"label": "SFT-only", "stages": ["sft"]},
        {"label": "wise", "stages": ["sft", "wise"], "overrides": {"wise.parameters": {"alpha": 0.5}}},
        {"label": "wise-again", "stages": ["sft", "wise"], "overrides": {"wise.parameters": {"alpha": 0.5}}},
        {"label": "wise-0.3", "stages": ["sft", "wise"], "overrides": {"wise.parameters": {"alpha": 0.3}}},
    ]
    plan = plan_of(tmp_path, {"arms": arms, "seeds": [0, 1]}, [*STAGES, MERGE])
    runs = {(r.arm.label, r.seed): r for r in plan.runs}
    merge = plan.nodes[runs["wise", 0].chain[-1]]
    assert merge.inputs == {"sft": runs["SFT-only", 0].chain[0], "base": None}
    assert merge.needs == [runs["SFT-only", 0].chain[0]]
    assert runs["wise-again", 0].chain == runs["wise", 0].chain  # the same merge of the same inputs: one node
    assert runs["wise-0.3", 0].chain[-1] != merge.key  # another alpha, another node
    assert plan.nodes[runs["wise", 1].chain[-1]].inputs["sft"] == runs["SFT-only", 1].chain[0]  # per seed
    assert merge.dir.parent == tmp_path / "run" / "stages" and merge.config.output == str(merge.dir / "final")
    assert merge.config.seed == 0  # the experiment's seed is a training seed: a merge keeps its own


def test_a_merge_of_model_paths_in_an_arm_waits_on_nothing(tmp_path):
    paths = {**MERGE, "base_model": "org/base", "models": [{"model": "org/fine-tune"}]}
    plan = plan_of(tmp_path, {"arms": [{"label": "soup", "stages": ["sft", "wise"]}]}, [*STAGES, paths])
    sft, merge = (plan.nodes[k] for k in plan.runs[0].chain)
    assert merge.is_merge and not sft.is_merge and merge.inputs == {}
    assert merge.needs == []  # it merges the paths in its config, not the arm's SFT model
    entry = stage_entry(plan, merge)
    assert entry["input"] == "org/fine-tune, org/base" and entry["kind"] == "merge"


def test_a_merge_naming_a_stage_outside_its_arm_is_refused(tmp_path):
    arms = [{"label": "SFT-only", "stages": ["sft"]}, {"label": "wise", "stages": ["wise"]}]
    with pytest.raises(UserError, match="names stage 'sft', which is not earlier in this arm"):
        plan_of(tmp_path, {"arms": arms}, [*STAGES, MERGE])
    export = {"name": "gguf", "kind": "export", "to": "hf"}
    with pytest.raises(UserError, match="chain training and merge stages"):
        plan_of(tmp_path, {"arms": [{"label": "x", "stages": ["sft", "gguf"]}]}, [*STAGES, export])
