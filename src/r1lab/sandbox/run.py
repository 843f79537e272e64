"""run_python: one program in a fresh bubblewrap sandbox, with limits, its output captured and capped.

The sandbox (see the package docstring for the threat model): new user, PID, network, mount, IPC, UTS and cgroup
namespaces (bwrap --unshare-all), all capabilities dropped, uid/gid 65534, no new user namespaces inside, a
seccomp filter (seccomp.py), and a root file system holding only /usr (and its /bin, /lib symlinks), the
interpreter's prefix read-only, a private /proc and /dev, and the working directory /sandbox: a fresh tmpfs of
`memory_mb` that vanishes with the run (/tmp points into it). Limits are rlimits that prlimit sets before bwrap starts (CPU
seconds, address space, file size, no core files), a cgroup per run for the process count and the run's total
memory (cgroups.py), a wall-clock deadline kept by the parent, and a cap on each output stream.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from r1lab.errors import UserError
from r1lab.sandbox import seccomp
from r1lab.sandbox.cgroups import Cgroup

WORKDIR = "/sandbox"
SANDBOX_UID = 65534  # nobody
_MIB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. cpu_s: CPU seconds per process; wall_s: seconds of the whole run; memory_mb: address space
    per process, the run's total memory where a memory cgroup is writable, and the size of its tmpfs;
    max_processes: processes and threads of the run; max_output_bytes: per stream (stdout, stderr), the run is
    killed past it; max_file_bytes: the largest file it may write."""

    cpu_s: float = 5
    wall_s: float = 10
    memory_mb: int = 512
    max_processes: int = 32
    max_output_bytes: int = 65536
    max_file_bytes: int = 16 * _MIB

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UserError(
                    f"SandboxLimits.{name} must be a positive number, got {value!r}",
                    fix=f"e.g. SandboxLimits({name}={getattr(SandboxLimits, name)})",
                )


@dataclass(frozen=True)
class SandboxResult:
    """exit_code: the program's status (None when the sandbox killed it: wall time or output); timed_out: it hit
    the wall or CPU limit; truncated: an output stream was cut at max_output_bytes; killed_reason: "wall_time",
    "cpu_time", "memory", "output" or "signal N", None for a program that ended by itself."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    truncated: bool
    killed_reason: str | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None


def interpreter() -> Path:
    """The Python the sandbox runs: the base installation's (stdlib only), not the venv's site-packages."""
    v = sys.version_info
    candidate = Path(sys.base_prefix) / "bin" / f"python{v.major}.{v.minor}"
    return candidate if candidate.exists() else Path(os.path.realpath(sys.executable))


def _userns_problem() -> str:
    for path, bad in (
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
    ):
        try:
            if Path(path).read_text().strip() == bad:
                return f"user namespaces are disabled ({path} is {bad})"
        except OSError:
            pass
    return "bubblewrap could not create its namespaces"


@lru_cache(maxsize=1)
def _bwrap_flags() -> tuple[str, ...]:
    """Options of this bwrap build worth passing (--disable-userns needs bubblewrap >= 0.8)."""
    help_text = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, check=False).stdout
    return ("--disable-userns",) if "--disable-userns" in help_text else ()


@lru_cache(maxsize=1)
def check_sandbox() -> None:
    """Raise UserError naming what this machine lacks to run the sandbox; returns None when it can."""
    if not sys.platform.startswith("linux"):
        raise UserError(f"the code sandbox needs Linux namespaces; this is {sys.platform}")
    if shutil.which("bwrap") is None:
        raise UserError(
            "bubblewrap (bwrap) not found: the code sandbox runs programs inside it",
            fix="apt-get install bubblewrap (Debian/Ubuntu), dnf install bubblewrap (Fedora)",
        )
    if shutil.which("prlimit") is None:
        raise UserError(
            "prlimit not found: the code sandbox sets its limits with it", fix="apt-get install util-linux"
        )
    if not interpreter().exists():
        raise UserError(f"the sandbox's Python interpreter {interpreter()} does not exist")
    probe = subprocess.run(
        [*_base_args(), str(interpreter()), "-I", "-c", "print(1)"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        raise UserError(
            f"{_userns_problem()}: bwrap exited {probe.returncode}: {probe.stderr.strip()[-500:]}",
            fix="allow user namespaces (sysctl -w user.max_user_namespaces=15000; kernel.unprivileged_userns_clone=1)"
            " or, in a container, run it with --security-opt seccomp=unconfined / a profile allowing unshare",
        )


def sandbox_problem() -> str | None:
    """What keeps this machine from running the sandbox (check_sandbox's message), or None."""
    try:
        check_sandbox()
    except UserError as exc:
        return str(exc)
    return None


def _base_args() -> list[str]:
    args = ["bwrap", "--unshare-all", "--unshare-user", *_bwrap_flags(), "--die-with-parent", "--new-session"]
    uid = str(SANDBOX_UID)
    args += ["--cap-drop", "ALL", "--uid", uid, "--gid", uid, "--hostname", "sandbox"]
    args += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    prefix = Path(sys.base_prefix).resolve()
    if not prefix.is_relative_to("/usr"):
        args += ["--ro-bind", str(prefix), str(prefix)]
    return [*args, "--proc", "/proc", "--dev", "/dev"]


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data) if len(data) < 65536 else _write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _file_args(files: dict[str, str], limits: SandboxLimits, fds: list[int]) -> list[str]:
    args: list[str] = []
    made: set[str] = set()
    for name, text in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or str(rel) == "main.py":
            raise UserError(
                f"sandbox file name {name!r} is not a plain relative path inside the working directory",
                fix="use names like 'data.txt' or 'pkg/util.py' (no '..', no leading '/', not 'main.py')",
            )
        data = text.encode()
        if len(data) > limits.max_file_bytes:
            raise UserError(
                f"sandbox file {name!r} is {len(data)} bytes, over max_file_bytes={limits.max_file_bytes}"
            )
        for parent in reversed(rel.parents[:-1]):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--dir", f"{WORKDIR}/{parent}"]
        fds.append(_memfd("r1lab-file", data))
        args += ["--perms", "0644", "--file", str(fds[-1]), f"{WORKDIR}/{rel}"]
    return args


def _process_count(uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            continue
    return count


# Joins the run's cgroups (its own pid, so every later child is inside) and execs the rest: no preexec_fn, which
# may deadlock in a parent with threads (the tool box, rollout workers).
_ENTER = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; n=$((n-1)); done; exec "$@"'


def _launcher(limits: SandboxLimits, group: Cgroup, nproc: int | None) -> list[str]:
    """sh (enter the cgroups) -> prlimit (the rlimits) -> what follows: bwrap."""
    cpu = max(1, math.ceil(limits.cpu_s))
    memory, size = limits.memory_mb * _MIB, limits.max_file_bytes
    rlimits = [f"--cpu={cpu}:{cpu + 1}", f"--as={memory}:{memory}", f"--fsize={size}:{size}", "--core=0:0"]
    if nproc is not None:
        rlimits.append(f"--nproc={nproc}:{nproc}")
    return [
        "/bin/sh",
        "-c",
        _ENTER,
        "sh",
        str(len(group.dirs)),
        *map(str, group.dirs),
        "prlimit",
        *rlimits,
        "--",
    ]


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _collect(proc: subprocess.Popen, limits: SandboxLimits) -> tuple[dict[int, bytearray], str | None]:
    """Read both streams until they close, the deadline passes or one overflows; the reason it stopped early."""
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    deadline = time.monotonic() + limits.wall_s
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return streams, "wall_time"
            for key, _ in selector.select(min(remaining, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buf = streams[key.fd]
                room = limits.max_output_bytes - len(buf)
                buf += chunk[:room]
                if len(chunk) > room:
                    return streams, "output"
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return streams, "wall_time"
    return streams, None


def _reason(status: int, group: Cgroup) -> str | None:
    """Why a program that the parent did not kill ended, from bwrap's status (128 + signal for a signalled one)."""
    if status <= 128:
        return None
    sig = status - 128
    if sig == signal.SIGXCPU:
        return "cpu_time"
    if sig == signal.SIGKILL:
        return "memory" if group.oom_killed() else "cpu_time"  # RLIMIT_CPU's hard limit and the OOM killer
    return f"signal {sig}"


def run_python(
    code: str, *, stdin: str = "", files: dict[str, str] | None = None, limits: SandboxLimits | None = None
) -> SandboxResult:
    """Run `code` as /sandbox/main.py with `files` beside it and `stdin` on its standard input, contained."""
    limits = limits or SandboxLimits()
    check_sandbox()
    fds: list[int] = []
    group = Cgroup.create(limits.max_processes + 2, limits.memory_mb * _MIB)  # + bwrap and its pid-1 reaper
    try:
        fds.append(_memfd("r1lab-main", code.encode()))
        args = [*_base_args(), "--size", str(limits.memory_mb * _MIB), "--tmpfs", WORKDIR]
        args += ["--perms", "0644", "--file", str(fds[0]), f"{WORKDIR}/main.py"]
        args += _file_args(files or {}, limits, fds)
        args += ["--symlink", WORKDIR, "/tmp", "--remount-ro", "/"]
        bpf = seccomp.filter_fd()
        if bpf is not None:
            fds.append(bpf)
            args += ["--seccomp", str(bpf)]
        args += ["--chdir", WORKDIR, "--clearenv", "--setenv", "PATH", "/usr/bin:/bin"]
        args += ["--setenv", "HOME", WORKDIR, "--setenv", "TMPDIR", WORKDIR, "--setenv", "LANG", "C.UTF-8"]
        args += ["--", str(interpreter()), "-I", "-X", "utf8", "main.py"]
        stdin_fd = _memfd("r1lab-stdin", stdin.encode())
        fds.append(stdin_fd)
        nproc = None if group.pids else _process_count(os.getuid()) + limits.max_processes
        proc = subprocess.Popen(
            _launcher(limits, group, nproc) + args,
            stdin=stdin_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=fds,
            start_new_session=True,
        )
        with proc:
            streams, stopped = _collect(proc, limits)
            if stopped is not None:
                _kill(proc)
            status = proc.wait()
        reason = stopped or _reason(status, group)  # before close(): an OOM kill is read from the cgroup
    finally:
        for fd in fds:
            os.close(fd)
        group.close()
    out, err = (bytes(b).decode("utf-8", errors="replace") for b in streams.values())
    return SandboxResult(
        stdout=out,
        stderr=err,
        exit_code=None if stopped else status,
        timed_out=reason in ("wall_time", "cpu_time"),
        truncated=stopped == "output",
        killed_reason=reason,
    )
