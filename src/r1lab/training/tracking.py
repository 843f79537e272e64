"""Run logging: `metrics.jsonl` always, a rich progress bar with ETA, and the `report_to` backends
(TensorBoard, W&B, MLflow, trackio: see `backends.py`).

Only the main process writes, draws or starts a backend; on other ranks every method is a no-op, so a loop
calls them freely.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from r1lab.data.jsonl import write_jsonl
from r1lab.training.backends import Backend, open_backend

console = Console(stderr=True)


class Tracker:
    """Log metrics per step and show progress.

    `start_step` > 0 means a resumed run: lines of `metrics.jsonl` past that step (written after the
    checkpoint we resume from) are dropped so the file reads as one continuous run. `config` (the resolved
    config as plain data) goes to every backend as its run config / params.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        enabled: bool,
        total_steps: int,
        start_step: int = 0,
        report_to: list[str] | None = None,
        key_metric: str = "loss",
        description: str = "train",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.key_metric = key_metric
        self.path = Path(output_dir) / "metrics.jsonl"
        self._backends: list[Backend] = []
        self._progress: Progress | None = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        for name in dict.fromkeys(report_to or []):
            self._backends.append(open_backend(name, Path(output_dir), config, resumed=start_step > 0))
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metric]}"),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total_steps, completed=start_step, metric="")
        self._progress.start()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Append one record to metrics.jsonl (and the backends: finite numbers only) and show the key metric."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}, "time": round(time.time(), 3)}
        write_jsonl(self.path, [record], append=True)
        if self._backends:
            scalars = {k: float(v) for k, v in record.items() if k != "step" and _finite_number(v)}
            scalars.pop("time")
            for backend in self._backends:
                backend.log(step, scalars)
        if self._progress is not None and self.key_metric in metrics:
            self._progress.update(self._task, metric=f"{self.key_metric} {metrics[self.key_metric]:.4f}")

    def advance(self, step: int) -> None:
        """Move the progress bar to `step` completed steps."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        for backend in self._backends:
            backend.close()
        self._backends = []

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        if step == 0:
            self.path.unlink()
            return
        kept = [
            line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return value
