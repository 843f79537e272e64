"""Metis-RISE's data step: buckets from a hand-made prompt_stats.jsonl, its errors, the CLI, and a recipe that
runs RL -> metis -> SFT on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rl_testkit import single_thread
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.errors import UserError
from r1lab.pipeline import PipelineState, execute, load_recipe, resolve_stages
from r1lab.stages.metis import build_metis_data


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def line(step: int, prompt: int, n: int, correct: int, **extra) -> dict:
    return {"step": step, "prompt": prompt, "text": f"question {prompt}", "n": n, "correct": correct, **extra}


def write_stats(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompt_stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x]


# over two steps: prompt 0 always right (8/8), 1 sometimes (1/8: its correct sample recorded in step 2), 2 never
# (0/8, a written solution), 3 never with nothing written, 4 sometimes (2/4, seen in step 2 only)
STATS = [
    line(1, 0, 4, 4, solution="s0", completion="c0"),
    line(1, 1, 4, 0, solution="s1"),
    line(1, 2, 4, 0, solution="s2"),
    line(1, 3, 4, 0, solution=None),
    line(2, 0, 4, 4),
    line(2, 1, 4, 1, completion="c1"),
    line(2, 2, 4, 0),
    line(2, 3, 4, 0),
    line(2, 4, 4, 2, solution="s4", completion="c4"),
]


def test_buckets_self_samples_for_mixed_and_written_solutions_for_never_solved(tmp_path):
    folder = write_stats(tmp_path / "rl", STATS)
    counts = build_metis_data(folder, tmp_path / "sft.jsonl")
    assert counts == {
        "prompts": 5,
        "solved": 1,
        "self": 2,
        "teacher": 0,
        "written": 1,
        "no_solution": 1,
        "no_sample": 0,
    }
    assert read(tmp_path / "sft.jsonl") == [
        {
            "prompt": "question 1",
            "completion": "c1",
            "metis": {"bucket": "self", "accuracy": 0.125, "rollouts": 8},
        },
        {
            "prompt": "question 2",
            "completion": "s2",
            "metis": {"bucket": "written", "accuracy": 0.0, "rollouts": 8},
        },
        {
            "prompt": "question 4",
            "completion": "c4",
            "metis": {"bucket": "self", "accuracy": 0.5, "rollouts": 4},
        },
    ]


def test_no_prompt_in_either_bucket_says_so_and_writes_nothing(tmp_path):
    folder = write_stats(
        tmp_path / "rl", [line(1, 0, 4, 4, completion="c"), line(2, 1, 4, 4, completion="d")]
    )
    with pytest.raises(
        UserError, match=r"no prompt in either bucket: all 2 prompts .* solved in every rollout"
    ):
        build_metis_data(folder, tmp_path / "sft.jsonl")
    assert not (tmp_path / "sft.jsonl").exists()


def test_never_solved_without_written_solutions_is_refused(tmp_path):
    folder = write_stats(tmp_path / "rl", [line(1, 0, 4, 0, solution=None), line(1, 1, 4, 4, completion="c")])
    with pytest.raises(
        UserError, match=r"1 never-solved prompts but none of them has a written \(or teacher's\) solution"
    ):
        build_metis_data(folder, tmp_path / "sft.jsonl")


def test_a_folder_without_prompt_stats_is_named(tmp_path):
    with pytest.raises(UserError, match=r"no prompt_stats\.jsonl in"):
        build_metis_data(tmp_path, tmp_path / "sft.jsonl")


def test_the_cli_writes_the_records(tmp_path):
    folder = write_stats(tmp_path / "rl", STATS)
    result = CliRunner().invoke(app, ["data", "metis", str(folder), "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert [r["completion"] for r in read(tmp_path / "out.jsonl")] == ["c1", "s2", "c4"]


def recipe_file(tmp_path: Path, model_dir: Path, stages: list[dict]) -> Path:
    data = {
        "name": "metis-tiny",
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(model_dir)},
        "task": {"name": "addition", "train_size": 8, "test_size": 4, "options": {"digits": 2}},
        "stages": stages,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


RL = {"name": "rl", "kind": "rl", "optim": {"lr": 1e-4}, "rollout": {"n": 2, "max_new_tokens": 4},
      "prompts_per_step": 4, "train": {"max_steps": 2, "batch_size": 8}}  # fmt: skip
SFT = {"name": "sft", "kind": "sft", "data": {"path": "metis"}, "train": {"max_steps": 1, "batch_size": 4}}


def test_a_recipe_runs_rl_then_metis_then_sft_on_its_file(tmp_path, tiny_model_dir):
    path = recipe_file(tmp_path, tiny_model_dir, [RL, {"name": "metis", "kind": "metis"}, SFT])
    root = execute(load_recipe(path), path)
    state = PipelineState(root).data["stages"]
    assert state["metis"]["exported"] == str(root / "metis" / "sft.jsonl")
    assert state["metis"]["model"] == state["rl"]["model"]  # the data step passes the RL model on
    assert state["sft"]["input"] == state["rl"]["model"]
    rows = read(root / "metis" / "sft.jsonl")
    stats = read(root / "rl" / "prompt_stats.jsonl")
    assert sum(r["n"] for r in stats) == 2 * 4 * 2  # steps x prompts x rollouts
    # the random tiny model solves nothing: each prompt it saw gets its written solution
    assert rows and all(r["metis"]["bucket"] == "written" for r in rows)
    assert len(rows) == len({r["prompt"] for r in stats})
    assert (root / "sft" / "final").is_dir()


@pytest.mark.parametrize(
    ("stages", "where"),
    [
        ([{"name": "metis", "kind": "metis"}], "stages[0]: input"),
        ([RL, {"name": "s", "kind": "sft"}, {"name": "metis", "kind": "metis"}], "stages[2]: input"),
        ([RL, {"name": "metis", "kind": "metis", "rl_stage": "x"}], "stages[1]: rl_stage"),
    ],
)
def test_a_metis_step_must_follow_an_rl_stage(tmp_path, tiny_model_dir, stages, where):
    path = recipe_file(tmp_path, tiny_model_dir, stages)
    with pytest.raises(UserError, match="reads the per-prompt accuracy of the RL stage") as err:
        resolve_stages(
            load_recipe(path), tmp_path, {"train": tmp_path / "t.jsonl", "test": tmp_path / "e.jsonl"}
        )
    assert where in str(err.value.where)


# the scripted verifier of the teacher test: only "question 2" counts as solved, whatever the completion
ONLY_Q2 = """
def only_q2(completion, *, prompt, **columns):
    return 1.0 if prompt == "question 2" else 0.0
"""


def test_a_teacher_solves_never_solved_prompts_verified_by_the_rl_rewards(tmp_path, tiny_model_dir):
    from r1lab.config import RLConfig, dump_config, validate
    from r1lab.stages.metis import Teacher

    folder = write_stats(tmp_path / "rl", STATS)
    (tmp_path / "q2.py").write_text(ONLY_Q2)
    rl = {"data": {"path": "p.jsonl"}, "rewards": [{"name": f"{tmp_path / 'q2.py'}:only_q2"}]}
    dump_config(validate(RLConfig, rl), folder / "config.yaml")
    counts = build_metis_data(
        folder, tmp_path / "sft.jsonl", Teacher(str(tiny_model_dir), k=2, max_new_tokens=4)
    )
    assert (counts["teacher"], counts["written"], counts["self"], counts["no_solution"]) == (1, 0, 2, 1)
    rows = {r["prompt"]: r for r in read(tmp_path / "sft.jsonl")}
    assert rows["question 2"]["metis"]["bucket"] == "teacher"  # the teacher's greedy sample, not "s2"
    assert rows["question 2"]["completion"] != "s2"
    assert "question 3" not in rows  # the teacher failed it and nothing is written


def test_teacher_knobs_without_a_teacher_are_refused():
    from r1lab.config import MetisConfig, validate

    with pytest.raises(UserError, match="k sets how the teacher samples"):
        validate(MetisConfig, {"kind": "metis", "k": 4})


def test_doctor_skips_the_data_a_metis_step_writes_and_checks_the_rest(tmp_path, tiny_model_dir):
    from r1lab.doctor.run import run_doctor

    path = recipe_file(tmp_path, tiny_model_dir, [RL, {"name": "metis", "kind": "metis"}, SFT])
    results = dict(run_doctor(path))
    assert list(results) == ["rl (rl)", "sft (sft)"]
    assert [(c.name, c.status) for c in results["sft (sft)"]] == [("data", "skip")]
    assert len(results["rl (rl)"]) > 1  # the RL stage's own checks ran
