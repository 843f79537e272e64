"""What the r1lab-against-TRL benchmarks share on TRL's side: the clocks, a step-end callback, and the trainer
arguments every TRL run gets, so both sides train with the same optimiser, schedule, precision and data order,
and TRL spends no time saving, evaluating or printing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def clocks() -> tuple[float, float]:
    """(wall time, CPU time of this process): on a shared machine CPU time is the steadier measure."""
    return time.perf_counter(), time.process_time()


def spent(ends: list[tuple[float, float]]) -> dict[str, float]:
    """Wall and CPU seconds from the first step's end to the last one's (the first step carries the warm-up)."""
    return {"seconds": ends[-1][0] - ends[0][0], "cpu_seconds": ends[-1][1] - ends[0][1]}


class StepClock(TrainerCallback):
    """Records `clocks()` at each step's end, and every log that holds a loss."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, float]] = []
        self.logs: list[dict[str, float]] = []

    def on_step_end(self, *_: Any, **__: Any) -> None:
        self.ends.append(clocks())

    def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **__: Any) -> None:
        if logs and "loss" in logs:
            self.logs.append(logs)


def trainer_args(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The keyword arguments of TRL's SFTConfig / DPOConfig that both benchmarks set alike."""
    return {
        "output_dir": str(out),
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": args.steps,
        "learning_rate": args.lr,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "max_grad_norm": 1.0,
        "bf16": args.precision == "bf16",
        "use_cpu": True,
        "max_length": args.max_length,
        "train_sampling_strategy": "sequential",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": args.seed,
        "disable_tqdm": True,
    }
