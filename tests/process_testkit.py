"""Run the real CLI in a child process that stops at a known step until the test signals it, so a test can kill
or interrupt a run at an exact point without racing the clock.

The child holds right after the progress bar reaches `pause_at` (Tracker.advance) and says so by creating the
file `paused_marker(...)`. It stays there until a signal arrives: SIGKILL ends it there; after SIGINT / SIGTERM
(the stage's own handler has run) the run goes on and stops cleanly. A signal that arrives before the hold is
remembered, so the order of the two does not matter. Nothing depends on the machine's speed: the test waits
for the marker with `wait_for`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PAUSING_CLI = """
import signal, sys, time
from pathlib import Path
import r1lab.training.tracking as tracking

pause_at, marker = int(sys.argv[1]), Path(sys.argv[2])
received = []
install = signal.signal
def recording(sig, handler):  # the stage's handlers still run; we only note that a signal came
    if callable(handler):
        inner = handler
        def handler(signum, frame):
            received.append(signum)
            return inner(signum, frame)
    return install(sig, handler)
signal.signal = recording

advance = tracking.Tracker.advance
def holding_advance(self, step):
    advance(self, step)
    if step == pause_at:
        marker.touch()
        while not received:
            time.sleep(0.01)
tracking.Tracker.advance = holding_advance
sys.argv = ["r1lab", *sys.argv[3:]]
from r1lab.cli import main
main()
"""

# Generous: a child on a busy shared CPU may take minutes to import torch and load the model. Only a run that
# never gets there waits this long; a passing test waits as long as the run needs.
TIMEOUT = 900.0


def paused_marker(tmp_path: Path, pause_at: int) -> Path:
    return tmp_path / f"paused-at-{pause_at}"


def start_paused(args: list[str], tmp_path: Path, pause_at: int, **popen: Any) -> subprocess.Popen:
    """`r1lab *args` in a child process that holds after step `pause_at` until it gets a signal."""
    script = tmp_path / "pausing_cli.py"
    script.write_text(PAUSING_CLI)
    popen.setdefault("env", {**os.environ, "OMP_NUM_THREADS": "1"})
    marker = paused_marker(tmp_path, pause_at)
    return subprocess.Popen([sys.executable, str(script), str(pause_at), str(marker), *args], **popen)


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = TIMEOUT
) -> None:
    """Poll `condition` until it holds; fail at once if the child exits first, and after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the run exited ({proc.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.05)


def wait_until_paused(proc: subprocess.Popen, tmp_path: Path, pause_at: int) -> None:
    wait_for(paused_marker(tmp_path, pause_at).exists, proc, f"the run held after step {pause_at}")
