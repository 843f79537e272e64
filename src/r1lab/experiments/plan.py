"""An experiment as a graph of stage nodes keyed by content: identical prefixes are one node.

A node's key is the sha256 of its resolved config (without `train.output_dir`, `train.resume` and the input
model's path) and its input's identity (the parent node's key, or the base model's path and revision). Data
files are keyed by their content, not their path. A merge node (`kind: merge`, whose inputs name `base` or
stages earlier in the arm) is keyed by its inputs' keys and its config instead of one parent's. A node trains
(or merges) into `stages/<name>-<key8>/`; an evaluation is
keyed by the evaluated node (or base model) and the eval config, and writes `evals/<name>-<key8>/`. So a stage
shared by several arms, re-runs, or recipes pointing at the same run folder is trained once, and changing one
key of a stage gives it (and everything downstream) a new key, leaving the rest untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.config import EvalConfig, MergeConfig, RecipeConfig, RLConfig, SFTConfig, deep_merge
from r1lab.errors import UserError
from r1lab.experiments.spec import Arm, Experiment
from r1lab.pipeline import eval_config, stage_config


@dataclass
class Node:
    key: str
    name: str
    config: SFTConfig | RLConfig | MergeConfig  # train.output_dir (a merge: output) is the node's folder
    parent: str | None  # the parent node's key; None: the base model
    seed: int | None
    # a merge: the stage names it uses -> their node keys (None: the base model)
    inputs: dict[str, str | None] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return stage_folder(self.config)

    @property
    def is_merge(self) -> bool:
        return isinstance(self.config, MergeConfig)

    @property
    def needs(self) -> list[str]:
        """The keys of the nodes whose models this one starts from (a merge: every input)."""
        if self.is_merge:
            return [k for k in self.inputs.values() if k is not None]
        return [] if self.parent is None else [self.parent]


def stage_folder(config: SFTConfig | RLConfig | MergeConfig) -> Path:
    """A node's folder: its stage.json, checkpoints and final/ (a merge's output is final/ in it too)."""
    if isinstance(config, MergeConfig):
        return Path(config.output).parent
    return Path(config.train.output_dir)


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
            arm_keys: dict[str, str | None] = {"base": None}  # the stages of this arm so far
            for name in arm.path:
                raw = {k: v for k, v in entries[name].items() if k not in ("name", "input")}
                for dotted, value in arm.changes.get(name, {}).items():
                    raw = deep_merge(raw, _nested(dotted, value))
                if seed is not None and raw.get("kind") != "merge":  # a merge trains nothing
                    raw["train"] = {**raw.get("train", {}), "seed": seed}
                where = f"{source}: stage {name!r} of arm {arm.label!r}"
                cfg = stage_config(recipe, raw, root, files, where)
                inputs: dict[str, str | None] = {}
                if isinstance(cfg, MergeConfig):
                    inputs = merge_inputs(cfg, arm_keys, set(entries), where)
                    named = {n: base_id if k is None else k for n, k in inputs.items()}
                    key = digest({"merge": named, "config": merge_fingerprint(cfg)})
                elif not hasattr(cfg, "train"):  # export, metis: not a model of the arm's chain
                    raise UserError(
                        f"stage {name!r} ({cfg.kind}) cannot be in an arm: arms chain training and merge stages",
                        where=where,
                        fix=f"run {cfg.kind} stages in a recipe without `experiment:`",
                    )
                else:
                    key = digest({"input": identity, "config": fingerprint(cfg.model_dump(mode="json"))})
                if key not in nodes:
                    folder = str(_folder(root / "stages", name, key))
                    if isinstance(cfg, MergeConfig):
                        cfg.output = str(Path(folder) / "final")
                    else:
                        cfg.train.output_dir = folder
                    nodes[key] = Node(key, name, cfg, parent, seed, inputs)
                parent = identity = arm_keys[name] = key
                chain.append(key)
            eval_key = digest({"model": identity, "eval": fingerprint(evaluation.model_dump(mode="json"))})
            label = nodes[parent].name if parent else "base"
            runs.append(Run(arm, seed, chain, eval_key, _folder(root / "evals", label, eval_key)))
    return Plan(root, recipe.model.path, nodes, runs, evaluation, experiment)


def merge_inputs(
    cfg: MergeConfig, arm_keys: dict[str, str | None], stage_names: set[str], where: str
) -> dict[str, str | None]:
    """The stages (or `base`) a merge node names, as node keys of this arm; a name of another arm's stage is an
    error, any other string a model path or hub name taken as it is."""
    refs = [m.model for m in cfg.models] + [r for r in (cfg.base_model, cfg.target_model) if r]
    inputs = {}
    for ref in refs:
        if ref in arm_keys:
            inputs[ref] = arm_keys[ref]
        elif ref in stage_names:
            raise UserError(
                f"the merge names stage {ref!r}, which is not earlier in this arm",
                where=where,
                fix=f"add {ref!r} to the arm's stages before the merge, or name one of: {', '.join(arm_keys)}",
            )
    return inputs


def merge_fingerprint(cfg: MergeConfig) -> dict[str, Any]:
    """A merge's config without its output folder (its inputs are keyed by the caller)."""
    return cfg.model_dump(mode="json", exclude={"output", "overwrite"})


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
