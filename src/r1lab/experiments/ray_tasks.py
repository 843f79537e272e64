"""The optional Ray executor (`pip install 'r1lab[ray]'`, then `--ray`): each stage and evaluation is a Ray task,
scheduled like `--jobs` (a stage once its input exists) on the Ray cluster `ray.init()` finds (RAY_ADDRESS), or
on a local instance it starts. A task asks for 1 GPU when the cluster has GPUs, else 1 CPU. The run folder must
be on a filesystem every node sees (each task works in the driver's current folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from r1lab.errors import UserError


def _run_request(request: dict[str, Any], cwd: str) -> None:  # module level: Ray pickles it by reference
    from r1lab.experiments.jobs import execute

    os.chdir(cwd)
    execute(request)


class RayTasks:
    def __init__(self, slots: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("--ray needs Ray installed", fix="pip install 'r1lab[ray]'") from None
        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        self.ray = ray
        resources = ray.cluster_resources()
        unit = "GPU" if resources.get("GPU", 0) >= 1 else "CPU"
        options = {"num_gpus": 1, "num_cpus": 1} if unit == "GPU" else {"num_cpus": 1}
        self.task = ray.remote(_run_request).options(**options, max_retries=0)
        self.slots = slots or max(1, int(resources.get(unit, 1)))

    def start(self, request: dict[str, Any], folder: Path) -> Any:
        return self.task.remote(request, os.getcwd())

    def poll(self, ref: Any) -> str | None:
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            self.ray.get(ref)
        except Exception as e:  # the task's own error, re-raised by Ray
            return f"{type(e).__name__}: {str(e)[-2000:]}"
        return ""

    def stop(self, ref: Any) -> None:
        self.ray.cancel(ref, force=True)
