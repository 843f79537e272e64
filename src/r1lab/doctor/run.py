"""`r1lab doctor CONFIG|RECIPE`: read a stage config (kind sft or rl) or a recipe, and run each training stage's
checks on its configured model and data before any training. A recipe's later stages are checked on the recipe's
base model (their real input does not exist yet), its task files are written to a temporary folder, and its
eval set is the one the overlap check compares with the training data."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from r1lab.config import STAGE_KINDS, RLConfig, SFTConfig, apply_overrides, load_yaml, validate
from r1lab.doctor.checks import Check
from r1lab.errors import UserError
from r1lab.pipeline import eval_config, load_recipe, resolve_stages, write_task_files
from r1lab.stages.metis import OUTPUT  # the file a metis step writes

CHECKED_KINDS = ("sft", "rl")


def run_doctor(path: Path, overrides: list[str] | None = None) -> list[tuple[str, list[Check]]]:
    """(stage label, its checks) for every SFT/RL stage of `path`; raises the stage's own UserErrors."""
    raw = load_yaml(path)
    if "stages" in raw:
        recipe = load_recipe(path, overrides)
        with tempfile.TemporaryDirectory(prefix="r1lab-doctor-") as tmp:
            files = write_task_files(recipe, Path(tmp))
            stages = resolve_stages(recipe, Path(tmp) / "stages", files, path)
            evaluation = eval_config(recipe, files, Path(tmp))
            eval_path = evaluation.data if evaluation is not None else None
            made = {str(Path(s.config.output) / OUTPUT) for s in stages if s.config.kind == "metis"}
            out = [(f"{s.name} ({s.config.kind})",
                    [_made_at_run_time(s.config.data.path)] if s.config.data.path in made
                    else _checks(s.config, eval_path))
                   for s in stages if getattr(s.config, "kind", None) in CHECKED_KINDS]  # fmt: skip
        if not out:
            raise UserError(
                "the recipe has no sft or rl stage to check",
                where=str(path),
                fix="doctor checks training stages",
            )
        return out
    data = apply_overrides(raw, overrides or [])
    kind = data.get("kind")
    if kind not in CHECKED_KINDS:
        raise UserError(
            f"doctor checks sft and rl stages; this config's kind is {kind!r}",
            where=f"{path}: kind",
            fix="set `kind: sft` or `kind: rl`, or give a recipe (a file with `stages:`)",
        )
    cfg = validate(STAGE_KINDS[kind], data, path)
    return [(f"{Path(path).name} ({kind})", _checks(cfg, None))]


def _made_at_run_time(path: str) -> Check:
    """A stage that trains on a file an earlier data step (metis) writes: nothing to read yet."""
    return Check(
        "data", "skip", f"its data ({path}) is written by an earlier metis step when the recipe runs"
    )


def _checks(cfg: Any, eval_path: str | None) -> list[Check]:
    if isinstance(cfg, SFTConfig):
        from r1lab.doctor.sft import sft_checks

        return sft_checks(cfg, eval_path)
    assert isinstance(cfg, RLConfig)
    from r1lab.doctor.rl import rl_checks

    return rl_checks(cfg, eval_path)


def render(results: list[tuple[str, list[Check]]]) -> str:
    lines = []
    for label, checks in results:
        lines.append(f"== {label}")
        lines += [c.render() for c in checks]
    failed = [c.name for _, checks in results for c in checks if c.failed]
    lines.append(f"{len(failed)} failed check(s)" + (f": {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)
