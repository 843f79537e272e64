"""The `experiment:` section of a recipe: arms (paths through the recipe's stages), baseline, seeds, sweeps.

    experiment:
      baseline: SFT-only          # default: the first arm
      seeds: [0, 1, 2]            # train.seed of every stage of the trained arms; the test set stays fixed
      arms:
        - {label: base, stages: []}                 # no stages: the base model
        - {label: SFT-only, stages: [sft]}          # a path from the base model, in order
        - {label: SFT→RL, stage: rl}                # or the last stage, following each stage's `input:`
        - label: SFT→RL
          stages: [sft, rl]
          overrides: {rl.algorithm.beta: 0.04}      # dotted keys: <stage>.<key in that stage's config>
          sweep: {key: sft.optim.lr, values: [1.0e-4, 3.0e-4]}   # one arm per value

A fixed annotation budget split between SFT examples and preference pairs (r1lab.experiments.budget):

    experiment:
      budget: {items: 1000, pair_cost: 1.0, sft: sft, preference: dpo}
      arms:
        - {label: SFT-only, stages: [sft], sft_share: 1}
        - {label: DPO-only, stages: [dpo], sft_share: 0}          # from the base model
        - {label: SFT→DPO, stages: [sft, dpo], sweep: {key: sft_share, values: [0.1, 0.5]}}

Every mistake is a UserError raised here, before anything trains.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, model_validator

from r1lab.config import STAGE_KINDS, RecipeConfig, StageTaskConfig, Strict, validate
from r1lab.errors import UserError


class SweepSpec(Strict):
    key: str  # <stage>.<dotted key of that stage's config>, e.g. sft.optim.lr
    values: list[Any] = Field(min_length=1)


class BudgetSpec(Strict):
    """B annotated items: an SFT example costs 1, a preference pair `pair_cost`. An arm's sft_share s gives the
    `sft` stage data.limit = round(s*B) written solutions, and the `preference` stage (a DPO stage with `pairs:`)
    pairs.offset = that many (its problems are the next ones) and pairs.limit = floor((1-s)*B / pair_cost)."""

    items: int = Field(gt=0)
    pair_cost: float = Field(1.0, gt=0)
    sft: str
    preference: str


class ArmSpec(Strict):
    label: str = Field(min_length=1)
    stages: list[str] | None = None  # the path from the base model; [] is the base model itself
    stage: str | None = None  # or: the arm's last stage, its path found by following `input:`
    overrides: dict[str, Any] = Field(default_factory=dict)  # <stage>.<key>: value, for this arm only
    sweep: SweepSpec | None = None  # key `sft_share` sweeps the budget split
    sft_share: float | None = None  # the share of experiment.budget spent on SFT examples (0..1)

    @model_validator(mode="after")
    def _one_path(self) -> ArmSpec:
        if (self.stages is None) == (self.stage is None):
            raise ValueError(
                "give an arm either `stages: [...]` (its path) or `stage: NAME` (its last stage)"
            )
        return self


class ExperimentConfig(Strict):
    arms: list[ArmSpec] = Field(min_length=1)
    baseline: str | None = None  # an arm's label; default: the first arm
    seeds: list[int] | None = None  # None: each stage keeps its own train.seed
    budget: BudgetSpec | None = None  # the arms' sft_share splits these annotated items


@dataclass
class Arm:
    """One arm after expansion: its path of stage names and the config changes of its stages."""

    label: str
    path: list[str]
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {dotted key: value}
    sweep: tuple[str, Any] | None = None  # (dotted key, value) when the arm came from a sweep
    sft_share: float | None = None  # its share of experiment.budget (the changes hold what it gives)


@dataclass
class Experiment:
    arms: list[Arm]
    baseline: str
    seeds: list[int | None]


def parse_experiment(recipe: RecipeConfig, raw: dict[str, Any] | None, source: Any) -> Experiment:
    where = f"{source}: experiment"
    raw = dict(raw or {})
    _check_seeds(raw.get("seeds"), where)
    cfg = validate(ExperimentConfig, raw, source)
    entries = {e.get("name"): e for e in recipe.stages}
    arms = [arm for spec in cfg.arms for arm in _expand(spec, entries, where)]
    if cfg.budget is not None or any(arm.sft_share is not None for arm in arms):
        from r1lab.experiments.budget import apply_budget

        arms = apply_budget(arms, cfg.budget, entries, recipe, where)
    seen: set[str] = set()
    for arm in arms:
        if arm.label in seen:
            raise UserError(
                f"two arms are labelled {arm.label!r}",
                where=f"{where}.arms",
                fix="give each arm its own label",
            )
        seen.add(arm.label)
    baseline = cfg.baseline or arms[0].label
    if baseline not in seen:
        close = difflib.get_close_matches(baseline, list(seen), n=1)
        raise UserError(
            f"the baseline arm {baseline!r} is not an arm of this experiment",
            where=f"{where}.baseline",
            fix=(f"did you mean {close[0]!r}? " if close else "") + f"arms: {', '.join(seen)}",
        )
    return Experiment(arms, baseline, list(cfg.seeds) if cfg.seeds is not None else [None])


def _check_seeds(seeds: Any, where: str) -> None:
    if seeds is None:
        return
    if not isinstance(seeds, list) or not seeds:
        raise UserError(
            "`seeds` must be a non-empty list of integers", where=f"{where}.seeds", fix="e.g. [0, 1, 2]"
        )
    for value in seeds:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(
                f"seed {value!r} is not an integer",
                where=f"{where}.seeds",
                fix="use whole numbers, e.g. [0, 1, 2]",
            )
    if len(set(seeds)) != len(seeds):
        raise UserError("a seed is listed twice", where=f"{where}.seeds", fix="list each seed once")


def _expand(spec: ArmSpec, entries: dict[str, dict], where: str) -> list[Arm]:
    at = f"{where}.arms[{spec.label}]"
    path = list(spec.stages) if spec.stages is not None else _follow_inputs(spec.stage, entries, at)
    for name in path:
        _known_stage(name, entries, at)
    repeated = [n for n in path if path.count(n) > 1]
    if repeated:
        raise UserError(
            f"arm {spec.label!r} passes through stage {repeated[0]!r} twice: a stage's input would depend on "
            "its own output (a cycle)",
            where=at,
            fix="to train the same config again later in a path, define a second stage under another name",
        )
    changes: dict[str, dict[str, Any]] = {}
    for key, value in spec.overrides.items():
        stage, rest = _check_key(key, path, entries, f"{at}.overrides")
        changes.setdefault(stage, {})[rest] = value
    if spec.sweep is None:
        return [Arm(spec.label, path, changes, sft_share=spec.sft_share)]
    if spec.sweep.key == "sft_share":
        if spec.sft_share is not None:
            raise UserError(
                f"arm {spec.label!r} sets sft_share and sweeps it", where=at, fix="remove one of them"
            )
        return [
            Arm(f"{spec.label} sft_share={value}", path, changes, ("sft_share", value), sft_share=value)
            for value in spec.sweep.values
        ]
    stage, rest = _check_key(spec.sweep.key, path, entries, f"{at}.sweep.key")
    leaf = rest.rsplit(".", 1)[-1]
    return [
        Arm(
            f"{spec.label} {leaf}={value}",
            path,
            {**changes, stage: {**changes.get(stage, {}), rest: value}},
            (spec.sweep.key, value),
            sft_share=spec.sft_share,
        )
        for value in spec.sweep.values
    ]


def _known_stage(name: str | None, entries: dict[str, dict], where: str) -> None:
    if name not in entries:
        close = difflib.get_close_matches(str(name), [str(n) for n in entries], n=1)
        raise UserError(
            f"unknown stage {name!r}",
            where=where,
            fix=(f"did you mean {close[0]!r}? " if close else "")
            + f"stages of this recipe: {', '.join(map(str, entries))}",
        )


def _follow_inputs(last: str | None, entries: dict[str, dict], where: str) -> list[str]:
    """The path ending at `last`: each stage's `input:` (default: the stage before it in the recipe)."""
    names = list(entries)
    path: list[str] = []
    current: str | None = last
    while current not in (None, "base"):
        _known_stage(current, entries, where)
        if current in path:
            chain = " -> ".join([*path, current])
            raise UserError(
                f"the stage inputs form a cycle: {chain} (each takes its input from the next)",
                where=where,
                fix="make one of them take `input: base`",
            )
        path.append(current)
        index = names.index(current)
        default = names[index - 1] if index > 0 else None
        current = entries[current].get("input", default)
    return list(reversed(path))


def _check_key(key: str, path: list[str], entries: dict[str, dict], where: str) -> tuple[str, str]:
    """Split `<stage>.<key>`; the stage must be on the arm's path and the key must exist in its config."""
    stage, _, rest = key.partition(".")
    if stage not in path or not rest:
        raise UserError(
            f"{key!r} does not start with a stage of this arm",
            where=where,
            fix=f"write <stage>.<key>, with a stage among: {', '.join(path) or '(none: the base arm has no stages)'}",
        )
    kind = entries[stage].get("kind")
    model = STAGE_KINDS.get(kind)
    if model is None:
        return stage, rest  # an unknown kind is reported when the stage itself is validated
    stage_task = ["task", *(f"task.{k}" for k in config_keys(StageTaskConfig))]  # a stage's own (curricula)
    valid = [*config_keys(model), *stage_task]
    if not any(rest == k or (k.endswith(".*") and rest.startswith(k[:-1])) for k in valid):
        close = difflib.get_close_matches(rest, [k for k in valid if not k.endswith(".*")], n=1, cutoff=0.4)
        raise UserError(
            f"no config key {key!r} in stage {stage!r} ({kind})",
            where=where,
            fix=f"did you mean '{stage}.{close[0]}'?" if close else f"see `r1lab {kind} --help` for its keys",
        )
    return stage, rest


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a config model; a free-form mapping field `m` gives `m` and `m.*`."""
    keys = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _sub_model(info.annotation)
        if sub is not None:
            keys += config_keys(sub, f"{dotted}.")
        elif typing.get_origin(info.annotation) is dict:
            keys.append(f"{dotted}.*")
    return keys


def _sub_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, tuple, dict):
        return None  # a list is swept or overridden whole
    for arg in typing.get_args(annotation):  # Optional[Model]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
