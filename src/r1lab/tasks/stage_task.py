"""A recipe stage's own task: curricula whose stages go from easy to hard through the task's options.

A stage's `task: {options: {count: 2}}` (or `{name, options, train_size, seed}`) is merged over the recipe's
`task:` and its train file is written to `data/<task>-<key8>/train.jsonl`, keyed by the merged task, so the
same stage task in several arms or re-runs is written once. The recipe's test set is untouched: every stage and
arm is evaluated on the same held-out problems. Options are checked by the task's own validation when the recipe
is resolved, before anything trains, and an error names the stage and the option.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from r1lab.config import StageTaskConfig, TaskDataConfig, validate
from r1lab.errors import UserError


def merged_task(recipe_task: TaskDataConfig, raw: Any, where: str) -> TaskDataConfig:
    """The recipe's task with a stage's `task:` merged over it: a stage naming another task starts from that
    task's defaults, one naming none (or the same) keeps the recipe's options and changes only the given ones."""
    from r1lab.tasks import get_task

    at = f"{where}: task"
    stage = validate(StageTaskConfig, raw if isinstance(raw, dict) else {"name": raw}, at)
    name = stage.name or recipe_task.name
    try:
        task = get_task(name)
    except UserError as e:
        raise UserError(e.what, where=f"{at}.name", fix=e.fix) from None
    base = dict(recipe_task.options) if name == recipe_task.name else {}
    options = {**base, **stage.options}
    _check_options(task, base, stage.options, at)
    return TaskDataConfig(
        name=name,
        train_size=stage.train_size or recipe_task.train_size,
        test_size=recipe_task.test_size,
        seed=recipe_task.seed if stage.seed is None else stage.seed,
        options=options,
    )


def _check_options(task: Any, base: dict[str, Any], given: dict[str, Any], at: str) -> None:
    """The task's own option checks, applied one stage option at a time so the error names the culprit."""
    for key in given:
        try:
            task.options({**base, **{k: given[k] for k in list(given)[: list(given).index(key) + 1]}})
        except UserError as e:
            raise UserError(
                f"{e.what} (this stage's task option {key}={given[key]!r})",
                where=f"{at}.options.{key}",
                fix=e.fix or f"see `r1lab data tasks` for {task.name!r}'s options and their defaults",
            ) from None


def stage_train_file(task_cfg: TaskDataConfig, data_dir: Path, where: str) -> Path:
    """Write (once) the stage task's train problems; the folder is keyed by the task, its options, size, seed."""
    from r1lab.tasks import get_task
    from r1lab.tasks.visual import write_task_file

    spec = task_cfg.model_dump(mode="json", exclude={"test_size"})
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    folder = data_dir / f"{task_cfg.name}-{key}"
    path = folder / "train.jsonl"
    if not path.is_file():
        try:
            records = get_task(task_cfg.name).generate(
                task_cfg.train_size, seed=task_cfg.seed, split="train", **task_cfg.options
            )
        except UserError as e:
            raise UserError(
                e.what, where=f"{where}: task", fix=f"{e.fix}; or a smaller task.train_size for this stage"
            ) from None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "task.json").write_text(json.dumps(spec, indent=2) + "\n")
        write_task_file(path, records)  # last: its presence means the folder is complete
    return path
