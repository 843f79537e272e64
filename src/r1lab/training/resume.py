"""Resuming a stage, the same way for SFT and RL: which checkpoint to continue from (`train.resume`), and
restoring it once the settings it must agree on (batch shape, process count, ...) are checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from r1lab.config import TrainConfig
from r1lab.errors import UserError
from r1lab.training.accel import is_main_process
from r1lab.training.checkpoint import META_FILE, find_latest_checkpoint, load_checkpoint
from r1lab.training.tracking import console


def resume_point(train: TrainConfig, out: Path) -> Path | None:
    """The checkpoint to continue from: the newest complete one when train.resume is set (none there: start
    from step 0); a fresh run (resume false) refuses a folder that already holds checkpoints. Cheap: call it
    before any model loads."""
    latest = find_latest_checkpoint(out)
    if not train.resume:
        if latest is not None:
            raise UserError(
                f"{out} already holds checkpoints of an earlier run (newest: {latest.name})",
                where="train.output_dir",
                fix="continue it with --resume (or train.resume=auto), or choose another output_dir",
            )
        return None
    if latest is None and train.resume is True and is_main_process():
        console.print(f"[yellow]resume: no checkpoint in {out}; starting from step 0[/yellow]")
    return latest


def restore(
    path: Path,
    accelerator: Accelerator,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    must_match: dict[str, tuple[Any, str]],
) -> dict[str, Any]:
    """Check that the checkpoint's meta agrees with this run on `must_match` ({meta key: (this run's value,
    the config key that sets it)}) and on the process count, then restore model, optimizer, scheduler and
    RNG; returns the checkpoint's meta."""
    meta = json.loads((path / META_FILE).read_text())
    checks = {"world_size": (accelerator.num_processes, "the process count (torchrun --nproc-per-node)")}
    for key, (value, where) in {**checks, **must_match}.items():
        if key in meta and meta[key] != value:
            raise UserError(
                f"checkpoint {path.name} was written with {where} = {meta[key]}, this run has {value}",
                where=f"{where} (checkpoint: {path})",
                fix=f"resume with {where} = {meta[key]}, or start a new output_dir",
            )
    meta = load_checkpoint(path, accelerator, model, optimizer, scheduler)
    if accelerator.is_main_process:
        console.print(f"resuming from {path} (step {meta['step']})")
    return meta
