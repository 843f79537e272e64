"""The code sandbox (r1lab.sandbox): ordinary programs run, and every attack of issue 15 stays inside.

Each attack runs for real in bubblewrap; after it the host is checked: a sentinel process the attack aimed at is
alive, no file appeared outside the sandbox, no listener got a connection, no sandbox process or cgroup is left.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from r1lab.errors import UserError
from r1lab.sandbox import (
    SandboxLimits,
    SandboxResult,
    cgroups,
    check_sandbox,
    run_python,
    sandbox_problem,
    seccomp,
)
from r1lab.sandbox import run as sandbox_run

MISSING = sandbox_problem()
needs_sandbox = pytest.mark.skipif(MISSING is not None, reason=f"sandbox unavailable: {MISSING}")
# wall time generous: these programs end in well under a second, but the machine running the tests may be loaded
QUICK = SandboxLimits(cpu_s=2, wall_s=30, memory_mb=256, max_processes=16)


@pytest.fixture
def sentinel():
    """A host process for the sandbox to try to kill."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def children_left() -> list[int]:
    """Processes (other than ones we wait on) whose parent is this test process."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    before = set(children_left())
    yield
    assert set(children_left()) <= before, "a sandbox process outlived its run"
    assert cgroups.live() == [], "a run's cgroup was not removed"


@needs_sandbox
def test_ordinary_program_stdout_stderr_exit_code_stdin_and_files():
    code = "import sys\nname = input()\nprint('hi', name, open('data/n.txt').read())\nprint('warn', file=sys.stderr)\nsys.exit(3)\n"
    result = run_python(code, stdin="ada\n", files={"data/n.txt": "42"})
    assert result == SandboxResult("hi ada 42\n", "warn\n", 3, False, False, None)
    assert result.ok is False
    ok = run_python("print(sum(range(10)))")
    assert (ok.stdout, ok.exit_code, ok.ok) == ("45\n", 0, True)


@needs_sandbox
def test_fresh_directory_each_run_and_writes_stay_inside():
    first = run_python(
        "open('left.txt', 'w').write('x'); import os; print(os.getcwd(), sorted(os.listdir('.')))"
    )
    assert first.stdout == "/sandbox ['left.txt', 'main.py']\n"
    second = run_python("import os; print(sorted(os.listdir('.')))")
    assert second.stdout == "['main.py']\n"


@needs_sandbox
def test_concurrent_runs_from_threads_see_only_their_own_files():
    def one(i: int) -> str:
        return run_python(
            "import os; print(open('n.txt').read(), sorted(os.listdir('.')))", files={"n.txt": str(i)}
        ).stdout

    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(one, range(4)))
    assert outputs == [f"{i} ['main.py', 'n.txt']\n" for i in range(4)]


@needs_sandbox
def test_fork_bomb_is_capped_and_contained():
    counter = (
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n"
        "            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, type(e).__name__, flush=True)\n"
    )
    result = run_python(counter, limits=QUICK)
    count, error = result.stdout.split()
    assert error == "BlockingIOError" and 0 < int(count) <= QUICK.max_processes
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_python(bomb, limits=SandboxLimits(cpu_s=2, wall_s=2, max_processes=16))
    assert result.timed_out and result.killed_reason in ("wall_time", "cpu_time")  # whichever comes first


@needs_sandbox
def test_memory_bombs_fail_inside():
    at_once = run_python("x = bytearray(4 * 1024**3)", limits=QUICK)
    assert at_once.exit_code == 1 and "MemoryError" in at_once.stderr
    growing = run_python("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n", limits=QUICK)
    assert growing.exit_code != 0 and not growing.ok
    assert "MemoryError" in growing.stderr or growing.killed_reason == "memory"


@needs_sandbox
def test_cpu_loop_and_sleep_are_stopped():
    spin = run_python("while True:\n    pass\n", limits=SandboxLimits(cpu_s=1, wall_s=120))
    assert spin.timed_out and spin.killed_reason == "cpu_time"
    sleep = run_python("import time\ntime.sleep(60)\n", limits=SandboxLimits(cpu_s=5, wall_s=1))
    assert sleep.timed_out and sleep.killed_reason == "wall_time" and sleep.exit_code is None


@needs_sandbox
def test_writing_outside_the_directory_fails(tmp_path):
    target = tmp_path / "escaped.txt"
    code = (
        "import os\nfor p in [{t!r}, '/usr/escaped.txt', '/escaped.txt', {m!r}]:\n    try:\n"
        "        os.makedirs(os.path.dirname(p), exist_ok=True)\n        open(p, 'w').write('x')\n"
        "        print('WROTE', p)\n    except OSError as e:\n        print('refused', p, type(e).__name__)\n"
    ).format(t=str(target), m=str(Path.cwd() / "escaped.txt"))
    result = run_python(code, limits=QUICK)
    verdicts = dict(reversed(line.split()[:2]) for line in result.stdout.splitlines())
    # /tmp inside is the sandbox's own directory, so a host path under /tmp (tmp_path; the project itself when it
    # is checked out there, as in CI) may be "written" there, never on the host
    for path, verdict in verdicts.items():
        assert verdict == "refused" or path.startswith("/tmp/"), result
    assert verdicts["/usr/escaped.txt"] == verdicts["/escaped.txt"] == "refused", result
    assert not target.exists() and not (Path.cwd() / "escaped.txt").exists()
    big = run_python(
        "open('big', 'wb').write(b'x' * (2 * 1024**2))", limits=SandboxLimits(max_file_bytes=1024**2)
    )
    assert big.exit_code == 1 and "File too large" in big.stderr


@needs_sandbox
def test_secrets_and_home_are_not_visible():
    code = (
        "import os\nfor p in ['/etc/shadow', '/etc/passwd', os.path.expanduser('~root/.bashrc')]:\n    try:\n"
        "        open(p).read()\n        print('READ', p)\n    except OSError as e:\n        print('no', p)\n"
        "print(sorted(os.listdir('/')))\nprint(sorted(os.listdir('/root')) if os.path.isdir('/root') else [])\n"
    )
    result = run_python(code, limits=QUICK)
    lines = result.stdout.splitlines()
    assert "READ" not in result.stdout and len(lines) == 5, result
    visible_root = set(ast.literal_eval(lines[3]))
    assert "etc" not in visible_root and "home" not in visible_root and "work" not in visible_root
    prefix = Path(sys.base_prefix).resolve()  # the interpreter's prefix is the one thing bound under a home
    allowed = {prefix.relative_to("/root").parts[0]} if prefix.is_relative_to("/root") else set()
    assert set(ast.literal_eval(lines[4])) <= allowed


@needs_sandbox
def test_no_network_not_even_the_hosts_loopback():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    code = (
        f"import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 80), ('8.8.8.8', 53)]:\n    try:\n"
        "        s = socket.create_connection(addr, timeout=2)\n        print('CONNECTED', addr)\n"
        "    except OSError as e:\n        print('no', addr, type(e).__name__)\n"
    )
    try:
        result = run_python(code, limits=QUICK)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    assert "CONNECTED" not in result.stdout and result.stdout.count("no ") == 3, result


@needs_sandbox
@pytest.mark.skipif(not seccomp.available(), reason="libseccomp is not installed")
def test_seccomp_refuses_inet_sockets_and_ptrace_but_not_unix_sockets():
    code = (
        "import ctypes, socket\ntry:\n    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\nexcept OSError as e:\n"
        "    print('inet6', e.errno)\na, b = socket.socketpair()\na.send(b'x')\nprint('unix', b.recv(1))\n"
        "libc = ctypes.CDLL(None, use_errno=True)\nprint('ptrace', libc.ptrace(0, 0, 0, 0), ctypes.get_errno())\n"
    )
    result = run_python(code, limits=QUICK)
    assert result.stdout == "inet6 1\nunix b'x'\nptrace -1 1\n", result  # 1: EPERM


@needs_sandbox
def test_filling_the_working_directory_stops_at_its_memory():
    code = (
        "for i in range(12):\n    open(f'f{i}', 'wb').write(b'x' * (15 * 2**20))\n    print(i, flush=True)\n"
    )
    result = run_python(code, limits=SandboxLimits(memory_mb=128, wall_s=30))
    written = len(result.stdout.split())
    assert not result.ok and written < 9  # 9 x 15 MiB > 128 MiB: a full tmpfs or the memory cgroup stops it
    assert result.killed_reason == "memory" or "No space left" in result.stderr, result


@needs_sandbox
def test_a_gigabyte_print_is_cut_and_the_run_ends():
    code = "import sys\nchunk = 'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    result = run_python(code, limits=SandboxLimits(max_output_bytes=65536))
    assert result.truncated and result.killed_reason == "output" and result.exit_code is None
    assert result.stdout == "x" * 65536


@needs_sandbox
def test_killing_the_parent_pid_1_and_everyone_stays_inside(sentinel):
    code = (
        f"import os, signal\nfor pid in [os.getppid(), 1, {sentinel.pid}, {os.getpid()}, -1]:\n    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n        print('sent', pid)\n"
        "    except OSError as e:\n        print('no', pid, type(e).__name__)\n"
    )
    result = run_python(code, limits=QUICK)
    assert sentinel.poll() is None, "the sandbox killed a host process"
    assert result.stdout.splitlines() == [
        "sent 1",  # os.getppid(): the sandbox's own pid-1 reaper, which ignores it
        "sent 1",
        f"no {sentinel.pid} ProcessLookupError",  # host pids do not exist in the sandbox's PID namespace
        f"no {os.getpid()} ProcessLookupError",
        "no -1 ProcessLookupError",  # "every process it may signal": none but itself and its pid 1
    ], result
    assert result.exit_code == 0


@needs_sandbox
def test_ctypes_libc_calls_stay_inside(sentinel, tmp_path):
    target = tmp_path / "from-system.txt"
    code = (
        "import ctypes, signal\nlibc = ctypes.CDLL(None)\n"
        f"print('kill', libc.kill({sentinel.pid}, signal.SIGKILL), libc.kill({os.getpid()}, signal.SIGKILL))\n"
        f"print('system', libc.system(b'touch {target}'))\n"
    )
    result = run_python(code, limits=QUICK)
    assert sentinel.poll() is None and not target.exists()
    assert result.stdout.startswith("kill -1 -1\nsystem "), result


def test_check_sandbox_names_a_missing_bwrap(monkeypatch):
    check_sandbox.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    try:
        with pytest.raises(
            UserError, match=r"(?s)bubblewrap \(bwrap\) not found.*apt-get install bubblewrap"
        ):
            check_sandbox()
    finally:
        monkeypatch.undo()
        check_sandbox.cache_clear()


def test_file_names_that_leave_the_directory_are_refused():
    for name in ["../x", "/etc/x", "main.py"]:
        with pytest.raises(UserError, match="not a plain relative path"):
            sandbox_run._file_args({name: "x"}, SandboxLimits(), [])


def test_limits_must_be_positive_numbers():
    for bad in [{"wall_s": 0}, {"memory_mb": -1}, {"cpu_s": "5"}, {"max_processes": True}]:
        with pytest.raises(UserError, match=f"SandboxLimits.{next(iter(bad))} must be a positive number"):
            SandboxLimits(**bad)
