"""Per-stage task options (curricula): each stage's train file has its own options, the eval stays on the recipe's
test set, and a bad option is named with its stage before anything trains."""

from __future__ import annotations

import json

import pytest

from r1lab.config import RecipeConfig, validate
from r1lab.errors import UserError
from r1lab.pipeline import eval_config, resolve_stages, write_task_files


def _recipe(tmp_path, stages, task=None):
    task = task or {"name": "countdown", "train_size": 40, "test_size": 10, "options": {"count": 4}}
    raw = {
        "name": "cur",
        "output_dir": str(tmp_path),
        "task": task,
        "eval": {"max_new_tokens": 8},
        "stages": stages,
    }
    return validate(RecipeConfig, raw, "test")


def _rl(name, **extra):
    return {"name": name, "kind": "rl", "train": {"max_steps": 1}, **extra}


def _rows(path):
    return [json.loads(line) for line in open(path)]


def test_each_stage_trains_on_its_own_options_and_eval_stays_on_the_recipe_test_set(tmp_path):
    stages = [
        {"name": "sft", "kind": "sft", "train": {"max_steps": 1}},
        _rl("rl-2", task={"options": {"count": 2}}),
        _rl("rl-3", task={"options": {"count": 3}, "train_size": 24}),
        _rl("rl-4"),
    ]
    recipe = _recipe(tmp_path, stages)
    files = write_task_files(recipe, tmp_path)
    resolved = {s.name: s.config for s in resolve_stages(recipe, tmp_path, files, "test")}
    paths = {name: cfg.data.path for name, cfg in resolved.items()}
    assert paths["sft"] == paths["rl-4"] == str(files["train"])  # no stage task: the recipe's train file
    counts = {name: {len(r["numbers"]) for r in _rows(p)} for name, p in paths.items()}
    assert counts == {"sft": {4}, "rl-2": {2}, "rl-3": {3}, "rl-4": {4}}
    assert len(_rows(paths["rl-2"])) == 40 and len(_rows(paths["rl-3"])) == 24
    assert {r["difficulty"] for r in _rows(paths["rl-3"])} == {3}
    # max_number / max_target are the recipe's (defaults here); only count changed, and the folder says so
    spec = json.loads((tmp_path / "data" / paths["rl-2"].split("/")[-2] / "task.json").read_text())
    assert spec["options"] == {"count": 2} and spec["train_size"] == 40
    evaluation = eval_config(recipe, files)
    assert evaluation.data == str(files["test"])
    assert {len(r["numbers"]) for r in _rows(evaluation.data)} == {4}
    assert resolved["rl-2"].rewards[0].name == "countdown"


def test_recipe_options_are_kept_and_a_stage_may_name_another_task(tmp_path):
    task = {"name": "countdown", "train_size": 30, "test_size": 10, "options": {"count": 4, "max_number": 9}}
    stages = [_rl("rl-2", task={"options": {"count": 2}}), _rl("add", task={"name": "addition"})]
    recipe = _recipe(tmp_path, stages, task)
    files = write_task_files(recipe, tmp_path)
    resolved = {s.name: s.config for s in resolve_stages(recipe, tmp_path, files, "test")}
    rows = _rows(resolved["rl-2"].data.path)
    assert {len(r["numbers"]) for r in rows} == {2} and max(n for r in rows for n in r["numbers"]) <= 9
    assert (
        resolved["add"].rewards[0].name == "arithmetic"
        and "+" in _rows(resolved["add"].data.path)[0]["prompt"]
    )


def test_same_stage_task_is_written_once_and_its_seed_draws_other_problems(tmp_path):
    two = {"options": {"count": 2}}
    stages = [_rl("a", task=two), _rl("b", task=two), _rl("c", task={**two, "seed": 1})]
    recipe = _recipe(tmp_path, stages)
    files = write_task_files(recipe, tmp_path)
    a, b, c = (s.config.data.path for s in resolve_stages(recipe, tmp_path, files, "test"))
    assert a == b != c
    assert {len(r["numbers"]) for r in _rows(c)} == {2} and _rows(a) != _rows(c)


@pytest.mark.parametrize(
    ("stage_task", "where", "said"),
    [
        ({"options": {"count": 9}}, "stages[1]: task.options.count", "count must be between 2 and 6, got 9"),
        ({"options": {"cuont": 2}}, "stages[1]: task.options.cuont", "has no option 'cuont'"),
        ({"options": {"count": "two"}}, "stages[1]: task.options.count", "must be a int"),
        ({"name": "nope"}, "stages[1]: task.name", "nope"),
        ({"test_size": 5}, "stages[1]: task", "test_size"),
    ],
)
def test_a_bad_stage_task_is_named_with_its_stage_and_option(tmp_path, stage_task, where, said):
    recipe = _recipe(tmp_path, [_rl("rl-2", task={"options": {"count": 2}}), _rl("rl-bad", task=stage_task)])
    files = write_task_files(recipe, tmp_path)
    with pytest.raises(UserError) as e:
        resolve_stages(recipe, tmp_path, files, "test")
    assert e.value.where.startswith("test: ") and where in e.value.where, e.value.where
    assert said in e.value.render()


def test_a_stage_task_with_its_own_data_path_is_refused(tmp_path):
    recipe = _recipe(tmp_path, [_rl("rl", task={"options": {"count": 2}}, data={"path": "mine.jsonl"})])
    with pytest.raises(UserError, match=r"both `task:` .* and `data\.path`"):
        resolve_stages(recipe, tmp_path, write_task_files(recipe, tmp_path), "test")


def test_a_stage_task_needs_a_recipe_task(tmp_path):
    raw = {"name": "x", "output_dir": str(tmp_path), "stages": [_rl("rl", task={"options": {"count": 2}})]}
    recipe = validate(RecipeConfig, raw, "test")
    with pytest.raises(UserError, match="this recipe has none"):
        resolve_stages(recipe, tmp_path, {}, "test")


def test_an_experiment_arm_may_change_a_stage_task_and_a_wrong_key_is_refused(tmp_path):
    from r1lab.experiments.plan import build_plan
    from r1lab.experiments.spec import parse_experiment

    experiment = {
        "arms": [
            {"label": "hard", "stages": ["rl"]},
            {"label": "easy", "stages": ["rl"], "overrides": {"rl.task.options.count": 2}},
            {"label": "sweep", "stages": ["rl"], "sweep": {"key": "rl.task.options.count", "values": [3, 5]}},
        ]
    }
    recipe = _recipe(tmp_path, [_rl("rl")]).model_copy(update={"experiment": experiment})
    files = write_task_files(recipe, tmp_path)
    plan = build_plan(recipe, parse_experiment(recipe, experiment, "test"), tmp_path, files, "test")
    counts = [
        {len(r["numbers"]) for r in _rows(plan.nodes[run.chain[-1]].config.data.path)} for run in plan.runs
    ]
    assert counts == [{4}, {2}, {3}, {5}]
    with pytest.raises(UserError, match=r"no config key 'rl\.task\.option\.count'"):
        bad = {"arms": [{"label": "x", "stages": ["rl"], "overrides": {"rl.task.option.count": 2}}]}
        parse_experiment(recipe, bad, "test")


def test_a_run_folder_written_for_other_task_settings_is_refused(tmp_path):
    stages = [{"name": "sft", "kind": "sft", "train": {"max_steps": 1}}]
    files = write_task_files(_recipe(tmp_path, stages), tmp_path)
    test_rows = _rows(files["test"])
    assert len(test_rows) == 10
    assert write_task_files(_recipe(tmp_path, stages), tmp_path) == files  # the same settings: the same files
    other = {"name": "countdown", "train_size": 40, "test_size": 6, "options": {"count": 4}}
    with pytest.raises(
        UserError, match=r"other task settings \(test_size: test_size=10; the recipe asks test_size=6\)"
    ):
        write_task_files(_recipe(tmp_path, stages, other), tmp_path)
    with pytest.raises(UserError, match=r"name, options: .*'countdown'"):
        write_task_files(
            _recipe(tmp_path, stages, {"name": "addition", "train_size": 40, "test_size": 10}), tmp_path
        )
    assert _rows(files["test"]) == test_rows  # nothing was overwritten
