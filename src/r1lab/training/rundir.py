"""The run directory: a writability check before any work, and `state.json` (status of the stage)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from r1lab.errors import UserError
from r1lab.training.accel import is_main_process


def ensure_writable(path: str | Path, *, key: str = "train.output_dir") -> Path:
    """Prove we can create and write `path`, or raise one readable UserError.

    Folders this check creates are removed again, so a start that fails later (bad data, bad model path)
    leaves no empty run folder behind; the stage creates the folder when it writes its first file. Only the
    main process checks (the others never write there, and would race its clean-up).
    """
    path = Path(path).expanduser()
    if not is_main_process():
        return path
    created = [p for p in (path, *path.parents) if not p.exists()]
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"cannot write to the output folder {str(path)!r}: {e.strerror or e}",
            where=key,
            fix=f"choose a writable folder, e.g. {key}=runs/my-run",
        ) from None
    finally:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def write_state(output_dir: str | Path, status: str, **extra: Any) -> None:
    """Atomically record the stage status ("running" | "interrupted" | "complete") in state.json."""
    path = Path(output_dir) / "state.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"status": status, "updated": round(time.time(), 3), **extra}, indent=2))
    os.replace(tmp, path)


def read_state(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None
