"""Run an experiment's plan: each node once (skipping finished ones, resuming an interrupted one from its newest
checkpoint), then each arm's evaluation; record everything in `pipeline.json` and write the report.

A node's folder holds `stage.json` (status, input model, output model, seconds, key); an evaluation's folder
holds run_eval's results.json and samples.jsonl. `pipeline.json` is a readable index of both (stage and eval
entries by name, and the arms) that `r1lab report` re-renders from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from r1lab.config import EvalConfig, MergeConfig, RecipeConfig, RLConfig, SFTConfig, dump_config
from r1lab.errors import UserError
from r1lab.experiments.plan import Node, Plan, Run, build_plan, display_names, stage_folder
from r1lab.experiments.spec import Experiment, parse_experiment
from r1lab.pipeline import (
    console,
    load_recipe,
    run_recipe,
    run_root,
    train_stage,
    wire_merge_inputs,
    write_task_files,
)

STATE = "pipeline.json"


def run_recipe_file(
    path: str | Path,
    overrides: list[str] | None = None,
    from_stage: str | None = None,
    jobs: int = 1,
    ray: bool = False,
) -> Path:
    """`r1lab run`: a recipe with an `experiment:` section runs as an experiment, any other as a pipeline."""
    recipe = load_recipe(path, overrides)
    if recipe.experiment is None:
        if jobs > 1 or ray:
            raise UserError(
                "--jobs/--ray run an experiment's independent stages in parallel; this recipe has no `experiment:`",
                where=str(path),
                fix="drop the flag (its stages depend on each other), or add an experiment section",
            )
        return run_recipe(path, overrides, from_stage)
    if from_stage is not None:
        raise UserError(
            "--from applies to a recipe without `experiment:`",
            where=str(path),
            fix="an experiment re-runs only the stages whose config changed: edit the stage instead",
        )
    return run_experiment(recipe, path, jobs=jobs, ray=ray)


def run_experiment(
    recipe: RecipeConfig,
    source: Any,
    experiment: Experiment | None = None,
    jobs: int = 1,
    ray: bool = False,
) -> Path:
    """Plan (every mistake is raised here, before anything trains), run, and report; returns the run folder."""
    from r1lab.experiments.report import write_experiment_report

    exp = experiment or parse_experiment(recipe, recipe.experiment, source)
    root = run_root(recipe)
    root.mkdir(parents=True, exist_ok=True)
    files = write_task_files(recipe, root)
    plan = build_plan(recipe, exp, root, files, source)
    dump_config(recipe, root / "recipe.yaml")
    names = display_names(plan)
    if jobs > 1 or ray:
        from r1lab.experiments.jobs import Processes, run_jobs
        from r1lab.experiments.ray_tasks import RayTasks

        run_jobs(plan, names, RayTasks(jobs if jobs > 1 else None) if ray else Processes(jobs))
    for i, run in enumerate(plan.runs):  # with --jobs, everything is done by now: this only records it
        for key in run.chain:
            ensure_stage(plan, plan.nodes[key], names[key])
        ensure_eval(plan, run, names)
        write_index(plan, names, recipe.name)
        if i + 1 == len(plan.runs) or plan.runs[i + 1].seed != run.seed:
            write_experiment_report(root)  # after every seed: a readable comparison while later seeds train
    return root


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def finished(node: Node) -> dict[str, Any] | None:
    entry = read_json(node.dir / "stage.json")
    if entry and entry.get("status") == "complete" and Path(entry["model"]).is_dir():
        return entry
    return None


def model_of(plan: Plan, chain: list[str]) -> str:
    if not chain:
        return plan.base_model
    entry = finished(plan.nodes[chain[-1]])
    assert entry is not None, "a node is evaluated only after it trained"
    return entry["model"]


def ensure_stage(plan: Plan, node: Node, name: str) -> dict[str, Any]:
    done = finished(node)
    if done:
        console.print(f"[dim]stage {name}: finished earlier, skipped[/dim]")
        return done
    return train_node(name, node_config(plan, node), stage_entry(plan, node))


def input_models(plan: Plan, node: Node) -> dict[str, str]:
    """A merge node's inputs by the names its config uses (`base`, stage names), as model paths."""
    return {
        name: plan.base_model if key is None else finished(plan.nodes[key])["model"]
        for name, key in node.inputs.items()
    }


def node_config(plan: Plan, node: Node) -> Any:
    """The config a node runs with: a merge's inputs wired to the models of the stages they name."""
    return wire_merge_inputs(node.config, input_models(plan, node)) if node.is_merge else node.config


def stage_entry(plan: Plan, node: Node) -> dict[str, Any]:
    """What stage.json records of a node before it trains (its input: the parent's output, or the base; a
    merge's: its input models, comma-separated)."""
    if node.is_merge:  # the models it merges, stage names wired to their outputs
        config = node_config(plan, node)
        refs = [m.model for m in config.models] + [r for r in (config.base_model, config.target_model) if r]
        source = ", ".join(refs)
    else:
        source = plan.base_model if node.parent is None else finished(plan.nodes[node.parent])["model"]
    return {"key": node.key, "name": node.name, "kind": node.config.kind, "seed": node.seed, "input": source}


def train_node(
    name: str, config: SFTConfig | RLConfig | MergeConfig, entry: dict[str, Any]
) -> dict[str, Any]:
    folder = stage_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "stage.json", {**entry, "status": "running"})
    out, seconds = train_stage(name, config, entry["input"])
    entry = {**entry, "status": "complete", "model": str(out), "seconds": seconds}
    write_json(folder / "stage.json", entry)
    return entry


def ensure_eval(plan: Plan, run: Run, names: dict[str, str]) -> dict[str, Any]:
    results = read_json(run.eval_dir / "results.json")
    if results is not None:
        return results
    return evaluate(eval_title(run, names), model_of(plan, run.chain), plan.evaluation, run.eval_dir)


def eval_title(run: Run, names: dict[str, str]) -> str:
    label = names[run.chain[-1]] if run.chain else "base"
    return f"{label} ({run.arm.label}{'' if run.seed is None else f', seed {run.seed}'})"


def evaluate(title: str, model: str, config: EvalConfig, folder: Path) -> dict[str, Any]:
    from r1lab.eval import run_eval

    console.rule(f"eval {title}")
    return run_eval(model, config, folder)


def write_index(plan: Plan, names: dict[str, str], title: str) -> None:
    """Merge this experiment's stages, evaluations and arms into pipeline.json (other entries are kept)."""
    path = plan.root / STATE
    data = read_json(path) or {}
    stages, evals = data.setdefault("stages", {}), data.setdefault("evals", {})
    for key, node in plan.nodes.items():
        entry = read_json(node.dir / "stage.json")
        if entry:
            stages[names[key]] = {**entry, "dir": str(node.dir)}
    arms = []
    for arm in plan.experiment.arms:
        runs = []
        for run in (r for r in plan.runs if r.arm is arm):
            results = read_json(run.eval_dir / "results.json")
            label = names[run.chain[-1]] if run.chain else "base"
            if results is not None:
                evals[label] = results
            runs.append(
                {
                    "seed": run.seed,
                    "stage": label,
                    "chain": [str(plan.nodes[k].dir) for k in run.chain],
                    "eval_dir": str(run.eval_dir),
                }
            )
        arms.append(
            {
                "label": arm.label,
                "stages": arm.path,
                "sweep": {"key": arm.sweep[0], "value": arm.sweep[1]} if arm.sweep else None,
                "runs": runs,
            }
        )
    data["experiment"] = {
        "name": title,
        "baseline": plan.experiment.baseline,
        "seeds": plan.experiment.seeds,
        "arms": arms,
    }
    write_json(path, data)
