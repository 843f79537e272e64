"""Graceful stop on Ctrl-C (SIGINT) or SIGTERM (what torchrun and schedulers send): the first signal sets a
flag the loop checks between optimizer steps, so the checkpoint written then holds a whole number of steps
and the RNG state of a step boundary. A second SIGINT interrupts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from r1lab.training.distributed import reduce_sum
from r1lab.training.rundir import write_state
from r1lab.training.tracking import Tracker, console

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """Raised by the loop at a step boundary after a stop signal; a checkpoint there is consistent."""


class StopFlag:
    """Use as a context manager around the training loop; call `check(accelerator)` at step boundaries."""

    def __init__(self) -> None:
        self._flag = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in _SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._flag = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops immediately

    def check(self, accelerator: Any) -> None:
        """Raise StopRequested when any rank got a stop signal (all-reduced, so all ranks stop together)."""
        flag = self._flag
        if accelerator.num_processes > 1:
            flag = reduce_sum(torch.tensor([float(flag)], device=accelerator.device)).item() > 0
        if flag:
            raise StopRequested


def record_stop(
    stopped: KeyboardInterrupt, step: int, total: int, out: Path, main: bool, tracker: Tracker,
    save: Callable[[int], Any],
) -> None:  # fmt: skip
    """What a training loop does when it is stopped, before re-raising: a stop at a step boundary writes a
    checkpoint; a second Ctrl-C (the step may be half done) keeps the newest periodic one. The run is marked
    interrupted, and the console says how to continue."""
    tracker.close()
    graceful = isinstance(stopped, StopRequested)
    if graceful:
        save(step)
    if main:
        write_state(out, "interrupted", step=step, total_steps=total)
        kept = f"checkpoint step-{step} saved" if graceful else "the newest periodic checkpoint is kept"
        console.print(f"[yellow]stopped at step {step}: {kept}; continue with --resume[/yellow]")
