"""Experiments end to end through the CLI on the tiny model: arms, seeds, shared stages trained once, a changed
key re-running only what depends on it, a sweep, an interrupted experiment resuming, `r1lab report`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from test_recipe_cli import STAGES, r1lab  # the tiny SFT and RL stages, the CLI runner
from test_recipe_cli import recipe as pipeline_recipe

from process_testkit import start_paused, wait_until_paused

SFT, RL = STAGES
SEEDED = yaml.safe_load((Path(__file__).parents[2] / "recipes" / "quickstart-seeds.yaml").read_text())[
    "experiment"
]
ARMS = [
    {"label": "base", "stages": []},
    {"label": "SFT-only", "stages": ["sft"]},
    {"label": "SFT→RL", "stages": ["sft", "rl"]},
]


def recipe(tmp_path: Path, model_dir: Path, stages=(SFT, RL), **experiment) -> Path:
    """test_recipe_cli's tiny recipe with these stages and an `experiment:` section (ARMS unless given)."""
    return pipeline_recipe(
        tmp_path, model_dir, name="tiny-exp", stages=list(stages), experiment={"arms": ARMS, **experiment}
    )


def trained(stderr: str, kind: str) -> int:
    """How many stages of this kind the run trained (each prints `stage NAME (KIND) from ...`)."""
    return stderr.count(f"({kind}) from")


def test_seeded_experiment_shares_stages_reruns_only_what_changed_and_rerenders(tmp_path, tiny_model_dir):
    # recipes/quickstart-seeds.yaml's experiment, with an arm override on top
    arms = [*SEEDED["arms"][:-1], {**SEEDED["arms"][-1], "overrides": {"rl.train.max_steps": 3}}]
    seeded = {**SEEDED, "arms": arms}
    path = recipe(tmp_path, tiny_model_dir, **seeded)
    first = r1lab("run", str(path))
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    folders = sorted(p.name.split("-")[0] for p in (run / "stages").iterdir())
    assert folders == ["rl"] * 3 + ["sft"] * 3  # one SFT per seed, shared by SFT-only and SFT→RL
    assert (trained(first.stderr, "sft"), trained(first.stderr, "rl")) == (3, 3)
    assert len(list((run / "evals").iterdir())) == 7  # base once, SFT-only and SFT→RL per seed

    state = json.loads((run / "pipeline.json").read_text())
    arms = {a["label"]: a for a in state["experiment"]["arms"]}
    assert [r["seed"] for r in arms["SFT→RL"]["runs"]] == [0, 1, 2]
    assert state["stages"]["rl@seed1"]["input"] == state["stages"]["sft@seed1"]["model"]
    sft_config = yaml.safe_load((Path(arms["SFT→RL"]["runs"][1]["chain"][0]) / "config.yaml").read_text())
    assert sft_config["train"]["seed"] == 1
    rl_config = yaml.safe_load((Path(arms["SFT→RL"]["runs"][1]["chain"][1]) / "config.yaml").read_text())
    assert (rl_config["train"]["seed"], rl_config["train"]["max_steps"]) == (1, 3)  # the arm's override

    table = (run / "results.md").read_text()
    for label in ("base", "SFT-only", "SFT→RL"):
        assert f"| {label} |" in table
    assert "Δ vs SFT-only" in table and "(baseline)" in table and "McNemar" in table and "Holm" in table
    assert "## Per seed" in table and "## Where they differ" in table
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert "http://" not in page and "https://" not in page

    again = r1lab("run", str(path))  # everything finished: nothing trains or evaluates again
    assert again.returncode == 0, again.stderr
    assert trained(again.stderr, "sft") + trained(again.stderr, "rl") == 0
    assert "eval " not in again.stderr.replace("finished earlier", "")

    (run / "results.md").unlink()
    (run / "report.html").unlink()
    shown = r1lab("report", str(run))
    assert shown.returncode == 0, shown.stderr
    assert (run / "results.md").read_text() == table
    assert "| SFT→RL |" in shown.stdout and (run / "report.html").is_file()
    against_rl = r1lab("report", str(run), "--baseline", "SFT→RL", "--out", str(tmp_path / "vs-rl"))
    assert against_rl.returncode == 0, against_rl.stderr
    assert "Δ vs SFT→RL" in (tmp_path / "vs-rl" / "results.md").read_text()
    assert (run / "results.md").read_text() == table  # the run's own report is left as it was
    unknown = r1lab("report", str(run), "--baseline", "DPO")
    assert unknown.returncode != 0 and "no arm 'DPO'" in unknown.stderr

    changed = recipe(tmp_path, tiny_model_dir, (SFT, {**RL, "optim": {"lr": 5e-4}}), **seeded)
    third = r1lab("run", str(changed))
    assert third.returncode == 0, third.stderr
    assert (trained(third.stderr, "sft"), trained(third.stderr, "rl")) == (0, 3)  # only the RL stages re-run
    assert len(list((run / "stages").iterdir())) == 9


def test_sweep_expands_into_one_arm_per_value_with_a_plot(tmp_path, tiny_model_dir):
    arms = [{"label": "SFT", "stages": ["sft"], "sweep": {"key": "sft.optim.lr", "values": [1e-3, 3e-3]}}]
    data = yaml.safe_load(recipe(tmp_path, tiny_model_dir, stages=(SFT,)).read_text())
    data["experiment"] = {"arms": [ARMS[0], *arms]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    result = r1lab("run", str(path))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    assert trained(result.stderr, "sft") == 2
    table = (run / "results.md").read_text()
    assert "| SFT lr=0.001 |" in table and "| SFT lr=0.003 |" in table
    assert "## Sweep over `sft.optim.lr`" in table
    assert (run / "plots" / "sweep-0.png").stat().st_size > 1000


def test_an_interrupted_experiment_resumes_the_stage_it_was_in(tmp_path, tiny_model_dir):
    short_sft = {**SFT, "train": {"max_steps": 6, "batch_size": 8, "save_every": 3}}
    path = recipe(tmp_path, tiny_model_dir, stages=(short_sft,))
    data = yaml.safe_load(path.read_text())
    data["experiment"]["arms"] = ARMS[:2]
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    # the experiment in a child that holds in SFT step 4 (after its step-3 checkpoint), killed (SIGKILL) there
    proc = start_paused(
        ["run", str(path)],
        tmp_path,
        pause_at=4,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill takes any worker down with it
    )
    try:
        wait_until_paused(proc, tmp_path, 4)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    checkpoints = list((tmp_path / "run").glob("stages/sft-*/checkpoints/step-*"))
    assert [p.name for p in checkpoints] == ["step-3"]
    stage = checkpoints[0].parents[1]
    assert json.loads((stage / "stage.json").read_text())["status"] == "running"
    assert not (stage / "final").exists()

    resumed = r1lab("run", str(path))
    assert resumed.returncode == 0, resumed.stderr
    printed = "".join(resumed.stderr.split())  # rich wraps long paths
    assert f"resumingfrom{checkpoints[0]}" in printed
    assert [p.name for p in (tmp_path / "run" / "stages").iterdir()] == [stage.name]  # the same stage folder
    assert json.loads((stage / "stage.json").read_text())["status"] == "complete"
    assert "| SFT-only |" in (tmp_path / "run" / "results.md").read_text()


def test_jobs_run_independent_stages_as_processes_into_the_same_folders(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, stages=(SFT,), arms=ARMS[:2], seeds=[0, 1])  # 2 SFTs, 3 evals
    result = r1lab("run", str(path), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    stages = sorted((run / "stages").iterdir())
    assert sorted(p.name.split("-")[0] for p in stages) == ["sft", "sft"]
    for folder in stages:
        assert json.loads((folder / "stage.json").read_text())["status"] == "complete"
        assert "stage" in (folder / "job.log").read_text()  # trained by its own process
    assert result.stderr.count("started stage") == 2 and result.stderr.count("started eval") == 3
    assert "| SFT-only |" in (run / "results.md").read_text()
    again = r1lab("run", str(path))  # the sequential engine finds every stage and eval finished
    assert again.returncode == 0, again.stderr
    assert trained(again.stderr, "sft") + trained(again.stderr, "rl") == 0


def test_ray_executor_on_a_local_instance(tmp_path, tiny_model_dir):
    pytest.importorskip("ray")  # runs wherever `pip install 'r1lab[ray]'` worked
    path = recipe(tmp_path, tiny_model_dir, stages=(SFT,), arms=ARMS[:2], seeds=[0, 1])
    result = r1lab("run", str(path), "--ray")  # ray.init() starts a local instance for the run
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    stages = sorted((run / "stages").iterdir())
    assert [json.loads((s / "stage.json").read_text())["status"] for s in stages] == ["complete"] * 2
    assert result.stderr.count("started stage") == 2 and result.stderr.count("finished eval") == 3
    assert "| SFT-only |" in (run / "results.md").read_text()


def test_a_merge_arm_runs_once_from_its_arm_stages_and_is_evaluated(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    wise = {"name": "wise", "kind": "merge", "merge_method": "wise_ft", "base_model": "base"}
    wise |= {"models": [{"model": "sft"}], "parameters": {"alpha": 0.5}}
    arms = [{"label": "SFT-only", "stages": ["sft"]}, {"label": "WiSE-FT", "stages": ["sft", "wise"]}]
    path = recipe(tmp_path, tiny_model_dir, stages=(SFT, wise), arms=arms, baseline="SFT-only", seeds=[0])
    first = r1lab("run", str(path), "--jobs", "2")
    assert first.returncode == 0, first.stderr
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    merged, sft = state["stages"]["wise"], state["stages"]["sft"]
    assert merged["status"] == "complete" and merged["input"] == f"{sft['model']}, {tiny_model_dir}"
    # (1 - α) base + α fine-tune, tensor by tensor
    base, tuned = (
        load_file(tiny_model_dir / "model.safetensors"),
        load_file(Path(sft["model"]) / "model.safetensors"),
    )
    out = load_file(Path(merged["model"]) / "model.safetensors")
    name = next(n for n in out if "mlp" in n)
    assert (out[name].float() - (0.5 * base[name].float() + 0.5 * tuned[name].float())).abs().max() < 1e-6
    assert (tuned[name] != base[name]).any()  # SFT moved it: the check can fail
    assert {r["label"] for r in state["experiment"]["arms"]} == {"SFT-only", "WiSE-FT"}
    assert len(list((tmp_path / "run" / "evals").iterdir())) == 2
    again = r1lab("run", str(path))
    assert again.returncode == 0 and trained(again.stderr, "merge") == 0 and trained(again.stderr, "sft") == 0
