"""A cgroup per sandbox run: a pids limit (the process cap that holds as root, where RLIMIT_NPROC does not) and,
where the memory controller is writable, a memory limit over the whole run (all processes and its tmpfs).

cgroup v1 (a directory per controller, as in this container) and v2 (one unified tree) are both tried; when no
controller is writable the run falls back to RLIMIT_NPROC (see run.py) and `Cgroup.pids` is False.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
_LIVE: set[Path] = set()  # created by this process and not removed yet


def live() -> list[Path]:
    """The cgroups this process created that still exist (none once every run has ended)."""
    return sorted(_LIVE)


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ('' for the v2 unified hierarchy), from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _make(parent: Path, settings: dict[str, str]) -> Path | None:
    """A new child cgroup of `parent` with `settings` written, or None where that is not allowed."""
    if not all((parent / key).parent.exists() for key in settings):
        return None
    child = parent / f"r1lab-sandbox-{uuid.uuid4().hex[:12]}"
    try:
        child.mkdir()
    except OSError:
        return None
    try:
        for key, value in settings.items():
            (child / key).write_text(value)
    except OSError:
        with contextlib.suppress(OSError):
            child.rmdir()
        return None
    _LIVE.add(child)
    return child


@dataclass
class Cgroup:
    """The cgroup directories of one run (run.py's launcher joins them before exec); `close()` removes them."""

    dirs: list[Path] = field(default_factory=list)
    pids: bool = False
    memory: bool = False

    @classmethod
    def create(cls, max_processes: int, memory_bytes: int) -> Cgroup:
        group = cls()
        try:
            own = _own_paths()
        except OSError:
            return group
        wanted = {"pids": {"pids.max": str(max_processes)}, "memory": {}}
        if "pids" in own and (ROOT / "pids").is_dir():  # v1: one hierarchy per controller
            wanted["memory"] = {"memory.limit_in_bytes": str(memory_bytes)}
            for name in ("pids", "memory"):
                if name in own and (ROOT / name).is_dir():
                    made = _make(ROOT / name / own[name].lstrip("/"), wanted[name])
                    if made is not None:
                        group.dirs.append(made)
                        setattr(group, name, True)
        elif "" in own:  # v2: limits the controllers enabled for our children allow
            parent = ROOT / own[""].lstrip("/")
            enabled = (parent / "cgroup.subtree_control").read_text().split() if parent.exists() else []
            settings = {"pids.max": str(max_processes)} if "pids" in enabled else {}
            if "memory" in enabled:
                settings["memory.max"] = str(memory_bytes)
            made = _make(parent, settings) if settings else None
            if made is not None:
                group.dirs.append(made)
                group.pids, group.memory = "pids" in enabled, "memory" in enabled
        return group

    def oom_killed(self) -> bool:
        for d in self.dirs:
            for name in ("memory.failcnt", "memory.events"):
                with contextlib.suppress(OSError, ValueError):
                    text = (d / name).read_text()
                    if name == "memory.failcnt" and int(text) > 0:
                        return True
                    if name == "memory.events" and any(
                        line.split()[0] == "oom_kill" and int(line.split()[1]) > 0
                        for line in text.splitlines()
                    ):
                        return True
        return False

    def close(self) -> None:
        """Kill whatever is left in the group (nothing, normally: the PID namespace died with its init)."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    d.rmdir()
                    _LIVE.discard(d)
                    break
                except OSError:
                    time.sleep(0.02)
