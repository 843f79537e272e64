"""Greedy soup (Wortsman et al., 2022): uniform soups grown in order of held-out accuracy.

Score every input on the validation set, sort them best first, start the soup with the best one, and add each
next one only if the uniform average of the soup plus it scores at least as well as the soup does (ties keep
it, as the paper's `>=`). Every candidate is a streaming `linear` merge into a scratch folder beside the output,
evaluated with the eval runner; the final soup is written to the output with `greedy_soup.json` (each input's
accuracy, each candidate's accuracy and whether it was kept).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from r1lab.config import EvalConfig, MergeConfig, validate
from r1lab.errors import UserError
from r1lab.models.merge_io import check_output

Score = Callable[[str, EvalConfig], float]


def accuracy(model_path: str, evaluation: EvalConfig) -> float:
    from r1lab.eval import run_eval

    return float(run_eval(model_path, evaluation)["accuracy"])


def greedy_soup(cfg: MergeConfig, merge: Callable[[MergeConfig], Path], score: Score = accuracy) -> Path:
    """`merge` writes one linear merge (run_merge); `score` is the validation accuracy of a model folder."""
    if cfg.validation is None:
        raise UserError(
            "greedy_soup needs a validation set to decide which models join the soup",
            where="validation",
            fix="add e.g. `validation: {task: addition, limit: 200}` or `validation: {data: val.jsonl, "
            "rewards: [{name: math}]}` (held-out problems, not the test set)",
        )
    unused = [k for k in ("base_model", "target_model") if getattr(cfg, k)] + [
        f"parameters.{k}" for k in cfg.parameters
    ]
    unused += ["models[].parameters.weight"] * any(
        "weight" in m.parameters.model_fields_set for m in cfg.models
    )
    if unused:
        raise UserError(
            f"greedy_soup does not use {unused[0]}", where=unused[0], fix="remove it (soups are uniform)"
        )
    evaluation = validate(EvalConfig, cfg.validation, "validation")
    out = Path(cfg.output)
    check_output(out, cfg.overwrite, "output")  # before any evaluation
    specs = [m.model for m in cfg.models]
    scores = {spec: score(spec, evaluation) for spec in specs}
    order = sorted(specs, key=lambda s: -scores[s])  # stable: equal scores keep the config's order
    soup, best = [order[0]], scores[order[0]]
    steps: list[dict[str, Any]] = []
    scratch = out.parent / f".{out.name}.soup-candidate"
    try:
        for spec in order[1:]:
            candidate = merge(_uniform(cfg, [*soup, spec], scratch, overwrite=True))
            value = score(str(candidate), evaluation)
            kept = value >= best
            steps.append({"added": spec, "accuracy": value, "soup_accuracy_before": best, "kept": kept})
            if kept:
                soup, best = [*soup, spec], value
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    final = merge(_uniform(cfg, soup, out, overwrite=cfg.overwrite))
    record = {"ingredients": scores, "order": order, "steps": steps, "soup": soup, "accuracy": best}
    (final / "greedy_soup.json").write_text(json.dumps(record, indent=2))
    return final


def _uniform(cfg: MergeConfig, specs: list[str], output: Path, overwrite: bool) -> MergeConfig:
    models = [{"model": s} for s in specs]
    update = {"merge_method": "linear", "validation": None, "output": str(output), "overwrite": overwrite}
    return validate(
        MergeConfig, {**cfg.model_dump(exclude_unset=True), **update, "models": models}, "greedy_soup"
    )
