"""An experiment as a graph of stage nodes keyed by content: identical prefixes are one node.

A node's key is the sha256 of its resolved config (without `train.output_dir`, `train.resume` and the input
model's path) and its input's identity (the parent node's key, or the base model's path and revision). Data
files are keyed by their content, not their path. A node trains into `stages/<name>-<key8>/`; an evaluation is
keyed by the evaluated node (or base model) and the eval config, and writes `evals/<name>-<key8>/`. So a stage
shared by several arms, re-runs, or recipes pointing at the same run folder is trained once, and changing one
key of a stage gives it (and everything downstream) a new key, leaving the rest untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1lab.config import EvalConfig, RecipeConfig, RLConfig, SFTConfig, deep_merge
from r1lab.errors import UserError
from r1lab.experiments.spec import Arm, Experiment
from r1lab.pipeline import eval_config, stage_config


@dataclass
class Node:
    key: str
    name: str
    config: SFTConfig | RLConfig  # train.output_dir is the node's folder
    parent: str | None  # the parent node's key; None: the base model
    seed: int | None

    @property
    def dir(self) -> Path:
        return Path(self.config.train.output_dir)


@dataclass
class Run:
    """One arm at one seed: the chain of nodes that produces its model, and its evaluation."""

    arm: Arm
    seed: int | None
    chain: list[str]  # node keys from the base model on; [] for the base arm
    eval_key: str
    eval_dir: Path


@dataclass
class Plan:
    root: Path
    base_model: str
    nodes: dict[str, Node]  # parents before children
    runs: list[Run]
    evaluation: EvalConfig
    experiment: Experiment


def build_plan(
    recipe: RecipeConfig, experiment: Experiment, root: Path, files: dict[str, Path], source: Any
) -> Plan:
    """Resolve and validate every stage of every arm at every seed (nothing runs here)."""
    evaluation = eval_config(recipe, files, root)
    if evaluation is None:
        raise UserError(
            "an experiment needs an `eval:` section to compare its arms",
            where=str(source),
            fix="add e.g. eval: {limit: 500}",
        )
    entries = {e.get("name"): e for e in recipe.stages}
    base_id = digest({"base": recipe.model.path, "revision": recipe.model.revision})
    nodes: dict[str, Node] = {}
    runs = []
    for seed in experiment.seeds:  # seed-major: a whole comparison is ready after the first seed
        for arm in experiment.arms:
            parent, identity, chain = None, base_id, []
            for name in arm.path:
                raw = {k: v for k, v in entries[name].items() if k not in ("name", "input")}
                for dotted, value in arm.changes.get(name, {}).items():
                    raw = deep_merge(raw, _nested(dotted, value))
                if seed is not None:
                    raw["train"] = {**raw.get("train", {}), "seed": seed}
                where = f"{source}: stage {name!r} of arm {arm.label!r}"
                cfg = stage_config(recipe, raw, root, files, where)
                if not hasattr(cfg, "train"):  # merge, export: their inputs are not one parent stage's model
                    raise UserError(
                        f"stage {name!r} is a {cfg.kind} stage; an experiment's arms chain training stages",
                        where=where,
                        fix=f"run {cfg.kind} stages in a recipe without `experiment:`",
                    )
                key = digest({"input": identity, "config": fingerprint(cfg.model_dump(mode="json"))})
                if key not in nodes:
                    cfg.train.output_dir = str(_folder(root / "stages", name, key))
                    nodes[key] = Node(key, name, cfg, parent, seed)
                parent = identity = key
                chain.append(key)
            eval_key = digest({"model": identity, "eval": fingerprint(evaluation.model_dump(mode="json"))})
            label = nodes[parent].name if parent else "base"
            runs.append(Run(arm, seed, chain, eval_key, _folder(root / "evals", label, eval_key)))
    return Plan(root, recipe.model.path, nodes, runs, evaluation, experiment)


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config that decide its result: no output folder or resume flag, data files by
    their content."""
    config = json.loads(json.dumps(config))
    config.get("train", {}).pop("output_dir", None)
    config.get("train", {}).pop("resume", None)
    config.get("model", {}).pop("path", None)  # the input identity stands for it
    config.get("model", {}).pop("revision", None)
    if config.get("suites") == []:  # an eval without suites keeps the key it had before they existed
        config.pop("suites")
    for section in (config.get("data"), config, *config.get("suites", [])):  # eval.suites: their files too
        if isinstance(section, dict):
            for key in ("path", "eval_path", "data", "perplexity"):
                value = section.get(key)
                if isinstance(value, str) and Path(value).is_file():
                    section[key] = "sha256:" + hashlib.sha256(Path(value).read_bytes()).hexdigest()
    return config


def _folder(parent: Path, name: str, key: str) -> Path:
    """`<parent>/<name>-<key8>`, or the folder another stage name already made for the same key."""
    existing = sorted(parent.glob(f"*-{key[:8]}"))
    return existing[0] if existing else parent / f"{name}-{key[:8]}"


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def display_names(plan: Plan) -> dict[str, str]:
    """A readable, unique name per node: the stage name; `name@seedS` when only the seed tells them apart;
    else `name-<key8>`."""
    by_name: dict[str, list[Node]] = {}
    for node in plan.nodes.values():
        by_name.setdefault(node.name, []).append(node)
    out = {}
    for name, group in by_name.items():
        seeds = [n.seed for n in group]
        for node in group:
            if len(group) == 1:
                out[node.key] = name
            elif len(set(seeds)) == len(seeds):
                out[node.key] = f"{name}@seed{node.seed}"
            else:
                out[node.key] = node.dir.name
    return out
