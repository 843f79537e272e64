"""Recipes: ordered stages, each stage's output model is the next stage's input.

A recipe run lives in one folder (`runs/<name>/`): `data/` (task files), one folder per stage, `eval/<label>/`
per evaluation, and `pipeline.json` recording what finished. Re-running skips finished stages and evaluations
and resumes an interrupted stage from its newest checkpoint; `from_stage` reruns from a stage on.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from r1lab.config import (
    STAGE_KINDS,
    EvalConfig,
    RecipeConfig,
    RLConfig,
    SFTConfig,
    apply_overrides,
    deep_merge,
    dump_config,
    load_yaml,
    validate,
)
from r1lab.errors import UserError

console = Console(stderr=True)


@dataclass
class Stage:
    name: str
    config: SFTConfig | RLConfig
    input: str | None = None  # "base", another stage's name, or None: the previous stage's output


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    return validate(RecipeConfig, apply_overrides(load_yaml(path), overrides or []), path)


def run_root(recipe: RecipeConfig) -> Path:
    return Path(recipe.output_dir or f"runs/{recipe.name}")


def write_task_files(recipe: RecipeConfig, root: Path) -> dict[str, Path]:
    """Write the recipe's task train/test files once (deterministic from the task seed)."""
    if recipe.task is None:
        return {}
    from r1lab.tasks import get_task
    from r1lab.tasks.visual import write_task_file

    task = get_task(recipe.task.name)
    check_task_files(recipe, root / "data")
    files = {}
    for split, size in (("train", recipe.task.train_size), ("test", recipe.task.test_size)):
        path = root / "data" / f"{split}.jsonl"
        if not path.is_file():
            records = task.generate(size, seed=recipe.task.seed, split=split, **recipe.task.options)
            write_task_file(path, records)  # a visual task's images go beside it
        files[split] = path
    return files


def check_task_files(recipe: RecipeConfig, data_dir: Path) -> None:
    """Refuse a run folder whose task files were written for other task settings: reusing them would train and
    evaluate on problems the recipe no longer asks for. The settings are recorded in data/task.json."""
    record = data_dir / "task.json"
    spec = recipe.task.model_dump(mode="json")
    if record.is_file():
        written = json.loads(record.read_text())
        if written != spec:
            changed = sorted(k for k in {**written, **spec} if written.get(k) != spec.get(k))
            raise UserError(
                f"the run folder's task files were written for other task settings ({', '.join(changed)}: "
                f"{', '.join(f'{k}={written.get(k)!r}' for k in changed)}; the recipe asks "
                f"{', '.join(f'{k}={spec.get(k)!r}' for k in changed)})",
                where=str(data_dir),
                fix="give the recipe another `output_dir` (or name), or delete the run folder to start over",
            )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(spec, indent=2) + "\n")  # files written before this record are trusted


def resolve_stages(
    recipe: RecipeConfig, root: Path, files: dict[str, Path], source: Any = None
) -> list[Stage]:
    """Turn the recipe's stage entries into validated stage configs (model paths are wired at run time)."""
    names: set[str] = set()
    stages = []
    for index, raw in enumerate(recipe.stages):
        where = f"{source or 'recipe'}: stages[{index}]"
        entry = dict(raw)
        name, kind, source_stage = entry.pop("name", None), entry.get("kind"), entry.pop("input", None)
        if not name:
            raise UserError(
                "a stage has no `name`", where=where, fix="give each stage a unique name, e.g. name: sft"
            )
        if kind not in STAGE_KINDS:
            raise UserError(
                f"unknown stage kind {kind!r}", where=where, fix=f"use one of: {', '.join(STAGE_KINDS)}"
            )
        if name in names:
            raise UserError(
                f"two stages are named {name!r}", where=where, fix="give each stage a unique name"
            )
        if kind == "merge" and source_stage is not None:
            raise UserError(
                f"merge stage {name!r} has `input:`, but a merge names its inputs itself",
                where=where,
                fix="remove `input:`; list the stages (or `base`) under `models:` / `base_model:`",
            )
        if source_stage not in (None, "base", *names):
            raise UserError(
                f"stage {name!r} takes its input from {source_stage!r}, which is not an earlier stage",
                where=where,
                fix=f"use `base` or one of: {', '.join(names) or '(no earlier stages)'}",
            )
        entry = _wire_data_steps(entry, source_stage, stages, root, where)
        names.add(name)
        stages.append(Stage(name, stage_config(recipe, entry, root / name, files, where), source_stage))
    return stages


# Stage kinds that train nothing: no model section or train section; their output is the stage folder.
UNTRAINED_KINDS = ("merge", "export", "metis")
# Stage kinds whose output is not the next policy (a file, a reward model): not evaluated, the next stage goes on
# from the model they were given; the output is in the stage's `exported` entry (a reward_model's final/).
SIDE_KINDS = ("export", "reward_model", "metis")


def _wire_data_steps(
    entry: dict[str, Any], source_stage: str | None, earlier: list[Stage], root: Path, where: str
) -> dict[str, Any]:
    """A metis step reads the RL stage folder of its input (`input:`, else the previous stage); a stage whose
    data.path names an earlier metis step trains on the file that step writes."""
    from r1lab.stages.metis import OUTPUT

    steps = {s.name for s in earlier if s.config.kind == "metis"}
    data = entry.get("data")
    if isinstance(data, dict) and data.get("path") in steps:
        entry = {**entry, "data": {**data, "path": str(root / data["path"] / OUTPUT)}}
    if entry.get("kind") != "metis":
        return entry
    source = next((s for s in earlier if s.name == source_stage), earlier[-1] if earlier else None)
    if "rl_stage" in entry or source is None or source.config.kind != "rl":
        raise UserError(
            "a metis step reads the per-prompt accuracy of the RL stage it follows",
            where=f"{where}: {'rl_stage' if 'rl_stage' in entry else 'input'}",
            fix="put it right after an RL stage, or name one with `input: RL_STAGE` (and no `rl_stage:`)",
        )
    return {**entry, "rl_stage": str(root / source.name)}


def stage_config(
    recipe: RecipeConfig, entry: dict[str, Any], output_dir: Path, files: dict[str, Path], where: str
) -> SFTConfig | RLConfig:
    """One stage entry (without name/input) validated as its kind's config: the recipe's model and task filled
    in, training into `output_dir`."""
    entry = dict(entry)
    kind = entry.get("kind")
    if kind in UNTRAINED_KINDS:
        return _untrained_config(kind, entry, output_dir, where)
    entry["model"] = deep_merge(recipe.model.model_dump(), entry.get("model", {}))
    entry["train"] = {**entry.get("train", {}), "output_dir": str(output_dir)}
    if recipe.task is not None:
        task_name, files = _stage_task(recipe, entry, files, where)
        entry = _task_defaults(entry, kind, task_name, files)
    elif "task" in entry:
        raise UserError(
            "a stage's `task:` overrides the recipe's task, and this recipe has none",
            where=f"{where}: task",
            fix="add a top-level `task:` (its test set is the held-out eval), or give the stage `data:`",
        )
    return validate(STAGE_KINDS[kind], entry, where)


def _stage_task(recipe: RecipeConfig, entry: dict, files: dict[str, Path], where: str) -> tuple[str, dict]:
    """A stage's own `task:` (popped from its entry; a curriculum step, r1lab.tasks.stage_task): its name and its
    train file; the test file stays the recipe's. Without one: the recipe's task and files."""
    raw = entry.pop("task", None)
    if raw is None:
        return recipe.task.name, files
    if "path" in entry.get("data", {}):
        raise UserError(
            "this stage has both `task:` (its train file) and `data.path`",
            where=f"{where}: task",
            fix="keep one: `task:` writes the stage's problems, `data.path` trains on a file of yours",
        )
    from r1lab.tasks.stage_task import merged_task, stage_train_file

    task = merged_task(recipe.task, raw, where)
    if task == recipe.task:
        return task.name, files
    return task.name, {**files, "train": stage_train_file(task, files["train"].parent, where)}


def _untrained_config(kind: str, entry: dict[str, Any], output_dir: Path, where: str) -> Any:
    if "output" in entry:
        raise UserError(
            f"a {kind} stage writes into its own stage folder",
            where=f"{where}: output",
            fix="remove `output`",
        )
    if kind == "export" and "model" in entry:
        raise UserError(
            "an export stage writes the model it is given",
            where=f"{where}: model",
            fix="remove `model`; use `input: STAGE` to export another stage's model",
        )
    return validate(STAGE_KINDS[kind], {**entry, "output": str(output_dir)}, where)


def wire_merge_inputs(config: Any, outputs: dict[str, str]) -> Any:
    """A merge stage's inputs that name `base` or an earlier stage become that model's path."""
    models = [m.model_copy(update={"model": outputs.get(m.model, m.model)}) for m in config.models]
    update = {"models": models}
    for key in ("base_model", "target_model"):
        value = getattr(config, key)
        update[key] = outputs.get(value, value) if value else value
    return config.model_copy(update=update)


def _task_defaults(entry: dict[str, Any], kind: str, task_name: str, files: dict[str, Path]) -> dict:
    from r1lab.tasks import get_task

    task = get_task(task_name)
    data = {"path": str(files["train"]), "system_prompt": task.system_prompt}
    if kind == "rl":
        data["format"] = "prompt"
        entry.setdefault("rewards", [{"name": task.reward}])
    if kind == "dpo" and isinstance(entry.get("pairs"), dict):  # on-policy pairs on the task's train prompts
        entry["pairs"] = {"rewards": [task.reward], **entry["pairs"]}
    entry["data"] = {**data, **entry.get("data", {})}
    return entry


def eval_config(recipe: RecipeConfig, files: dict[str, Path], root: Path | None = None) -> EvalConfig | None:
    """The recipe's eval (the task's test set unless it names its own); its suites checked and their task files
    written into `root`/data (the run folder by default)."""
    if recipe.eval is None:
        return None
    raw = dict(recipe.eval)
    if recipe.task is not None and not raw.get("task") and not raw.get("data"):
        from r1lab.tasks import get_task

        task = get_task(recipe.task.name)
        raw = {
            "data": str(files["test"]),
            "rewards": [{"name": task.reward}],
            "system_prompt": task.system_prompt,
            **raw,
        }
    cfg = validate(EvalConfig, raw, "recipe: eval")
    if cfg.suites:
        from r1lab.eval.suites import resolve_suites

        cfg = resolve_suites(cfg, (root or run_root(recipe)) / "data", "recipe: eval.suites")
    return cfg


class PipelineState:
    """`pipeline.json`: which stages and evaluations finished, and where each stage's model is."""

    def __init__(self, root: Path) -> None:
        self.path = root / "pipeline.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.setdefault("stages", {})
        self.data.setdefault("evals", {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)

    def finished_model(self, stage: str) -> str | None:
        entry = self.data["stages"].get(stage)
        if not entry or entry.get("status") != "complete":
            return None
        if Path(entry["exported"]).exists() if "exported" in entry else Path(entry["model"]).is_dir():
            return entry["model"]
        return None

    def forget_from(self, names: list[str]) -> None:
        for name in names:
            self.data["stages"].pop(name, None)
            self.data["evals"].pop(name, None)


def run_recipe(path: str | Path, overrides: list[str] | None = None, from_stage: str | None = None) -> Path:
    """Run every stage in order (skipping finished ones), evaluating the base model and each stage's output."""
    root = execute(load_recipe(path, overrides), path, from_stage)
    _write_summary(PipelineState(root), root)
    return root


def execute(recipe: RecipeConfig, source: str | Path, from_stage: str | None = None) -> Path:
    root = run_root(recipe)
    root.mkdir(parents=True, exist_ok=True)
    files = write_task_files(recipe, root)
    stages = resolve_stages(recipe, root, files, source)
    evaluation = eval_config(recipe, files, root)
    dump_config(recipe, root / "recipe.yaml")
    state = PipelineState(root)
    if from_stage is not None:
        _rerun_from(from_stage, stages, state, root)

    outputs = {"base": recipe.model.path}
    model_path = recipe.model.path
    _evaluate("base", model_path, evaluation, state, root)
    for stage in stages:
        if stage.input is not None:
            model_path = outputs[stage.input]
        done = state.finished_model(stage.name)
        if done:
            console.print(f"[dim]stage {stage.name}: finished earlier, skipped[/dim]")
            model_path = done
        else:
            if stage.config.kind == "merge":
                stage = Stage(stage.name, wire_merge_inputs(stage.config, outputs), stage.input)
            model_path = _run_stage(stage, model_path, state)
        outputs[stage.name] = model_path
        if stage.config.kind not in SIDE_KINDS:  # already evaluated (an export), or not a policy (an RM)
            _evaluate(stage.name, model_path, evaluation, state, root)
    return root


def _rerun_from(from_stage: str, stages: list[Stage], state: PipelineState, root: Path) -> None:
    names = [s.name for s in stages]
    if from_stage not in names:
        raise UserError(f"no stage named {from_stage!r}", fix=f"stages in this recipe: {', '.join(names)}")
    later = names[names.index(from_stage) :]
    for name in later:
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.rmtree(root / "eval" / name, ignore_errors=True)
    state.forget_from(later)
    state.save()


def _run_stage(stage: Stage, model_path: str, state: PipelineState) -> str:
    state.data["stages"][stage.name] = {"status": "running", "input": model_path}
    state.save()
    out, seconds = train_stage(stage.name, stage.config, model_path)
    entry = {"status": "complete", "input": model_path, "model": str(out), "seconds": seconds}
    if stage.config.kind in SIDE_KINDS:  # the next stage goes on from the model it was given
        entry.update(model=model_path, exported=str(out))
    state.data["stages"][stage.name] = entry
    state.save()
    return entry["model"]


# kind -> "module:function" that trains a stage of that kind from its validated config and returns its model path.
# Imported on use, so a recipe of SFT stages never imports the RL (or DPO...) stack.
STAGE_RUNNERS: dict[str, str] = {
    "sft": "r1lab.stages.sft:run_sft",
    "rl": "r1lab.stages.rl:run_rl",
    "dpo": "r1lab.stages.dpo:run_dpo",
    "merge": "r1lab.stages.merge:run_merge",
    "export": "r1lab.stages.export:run_export",
    "reward_model": "r1lab.stages.reward_model:run_reward_model",
    "metis": "r1lab.stages.metis:run_metis",
}


def stage_runner(kind: str) -> Callable[[Any], str | Path]:
    module, function = STAGE_RUNNERS[kind].split(":")
    return getattr(importlib.import_module(module), function)


def train_stage(name: str, config: SFTConfig | RLConfig, model_path: str) -> tuple[Path, float]:
    """Train one stage from `model_path`, resuming from its newest checkpoint; (its output model, seconds)."""
    cfg = config.model_copy(deep=True)
    if cfg.kind == "merge":  # its inputs are in its config; an interrupted merge starts again
        cfg.overwrite = True
    elif cfg.kind == "metis":  # a data step: it reads its RL stage's folder, not a model
        pass
    elif not _model_exists(model_path):
        raise UserError(f"stage {name!r}: its input model {model_path!r} does not exist")
    elif cfg.kind == "export":
        cfg.model = model_path
    else:
        cfg.model.path = model_path
        cfg.train.resume = "auto"  # an interrupted stage continues from its newest checkpoint
    console.rule(f"stage {name} ({cfg.kind}) from {model_path}")
    started = time.monotonic()
    out = stage_runner(cfg.kind)(cfg)
    return Path(out), round(time.monotonic() - started, 1)


def _model_exists(spec: str) -> bool:
    from r1lab.models import resolve_model_path

    try:
        resolve_model_path(spec)
    except UserError:
        return False
    return True


def _evaluate(label: str, model_path: str, cfg: EvalConfig | None, state: PipelineState, root: Path) -> None:
    done = state.data["evals"].get(label)
    if cfg is None or (done is not None and {s.name for s in cfg.suites} <= set(done.get("suites", {}))):
        return  # evaluated earlier, on every suite the recipe now lists
    from r1lab.eval import run_eval

    console.rule(f"eval {label}")
    results = run_eval(model_path, cfg, root / "eval" / label)
    state.data["evals"][label] = results
    state.save()


def _write_summary(state: PipelineState, root: Path) -> None:
    from r1lab.eval.tables import results_table

    if state.data["evals"]:
        from r1lab.eval.suites import suites_markdown

        table = results_table(state.data["evals"])
        table = "\n\n".join([table, *suites_markdown(state.data["evals"])])  # one section per eval suite
        (root / "results.md").write_text(table + "\n")
        console.print(table)
