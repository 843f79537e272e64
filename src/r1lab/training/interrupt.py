"""Graceful stop on Ctrl-C (SIGINT) or SIGTERM (what torchrun and schedulers send): the first signal sets a
flag the loop checks between optimizer steps, so the checkpoint written then holds a whole number of steps
and the RNG state of a step boundary. A second SIGINT interrupts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

from r1lab.training.distributed import reduce_sum

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
