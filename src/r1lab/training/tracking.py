"""Run logging: `metrics.jsonl` always, a rich progress bar with ETA, TensorBoard when asked for and installed.

Only the main process writes or draws; on other ranks every method is a no-op, so a loop calls them freely.
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

console = Console(stderr=True)


class Tracker:
    """Log metrics per step and show progress.

    `start_step` > 0 means a resumed run: lines of `metrics.jsonl` past that step (written after the
    checkpoint we resume from) are dropped so the file reads as one continuous run.
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
    ) -> None:
        self.enabled = enabled
        self.key_metric = key_metric
        self.path = Path(output_dir) / "metrics.jsonl"
        self._tb: Any = None
        self._progress: Progress | None = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        self._file = self.path.open("a")
        for backend in report_to or []:
            if backend == "tensorboard":
                self._tb = _tensorboard_writer(Path(output_dir) / "tensorboard")
            else:
                console.print(
                    f"[yellow]report_to: {backend!r} is not supported yet; metrics.jsonl only[/yellow]"
                )
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
        """Append one record to metrics.jsonl (and TensorBoard) and show the key metric."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}, "time": round(time.time(), 3)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
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
        self._file.close()
        if self._tb is not None:
            self._tb.close()

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


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        console.print("[yellow]report_to: tensorboard is not installed (pip install tensorboard)[/yellow]")
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return value
