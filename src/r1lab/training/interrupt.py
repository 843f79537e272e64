"""Graceful Ctrl-C: the first SIGINT sets a flag the loop checks between optimizer steps (so a checkpoint
holds a whole number of steps and the RNG state of a step boundary); a second one interrupts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch


class StopFlag:
    """Use as a context manager around the training loop; read `requested(accelerator)` at step boundaries."""

    def __init__(self) -> None:
        self._flag = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._flag = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops immediately

    def requested(self, accelerator: Any) -> bool:
        """True when any rank got SIGINT (an all-reduce when several processes run, so all stop together)."""
        if accelerator.num_processes == 1:
            return self._flag
        flag = torch.tensor([1.0 if self._flag else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
