"""The sandbox that runs untrusted code (the `python` tool, the `code` reward).

    from r1lab.sandbox import run_python, SandboxLimits
    result = run_python("print(input()[::-1])", stdin="abc", limits=SandboxLimits(wall_s=5))
    result.stdout, result.exit_code, result.timed_out, result.truncated, result.killed_reason

Mechanism: Debian's bubblewrap (`bwrap`, one apt package; `check_sandbox()` says what is missing) with every
namespace new (user, PID, network, mount, IPC, UTS, cgroup), all capabilities dropped, uid/gid 65534, no further
user namespaces, a seccomp filter when libseccomp is present, rlimits, and a cgroup per run. Each run gets a
fresh tmpfs as its working directory `/sandbox` (its code is `main.py`, `files` beside it, `/tmp` points there);
it vanishes with the run and never touches the host's disk.

Threat model: the code is hostile but runs as an ordinary program; the kernel is trusted.
Contained (each tested in tests/unit/test_sandbox.py):
- processes: a fork bomb stops at `max_processes` (a pids cgroup: we run as root, where RLIMIT_NPROC is not
  enforced; RLIMIT_NPROC is the fallback where no cgroup is writable); no host process can be signalled
  (its PID namespace holds only itself: os.kill of the parent, of pid 1 or -1, via ctypes too, reach nothing
  outside); the whole namespace dies with the run (bwrap --die-with-parent, the parent kills it at the deadline).
- resources: CPU seconds (RLIMIT_CPU), wall time (killed by the parent), memory (RLIMIT_AS per process, and a
  memory cgroup over the run and its tmpfs where writable), file size (RLIMIT_FSIZE), output (each stream cut at
  `max_output_bytes` and the run killed: a 1 GB print costs nothing).
- files: the root is a read-only view of /usr (with /bin, /lib symlinks) and the interpreter's prefix, private
  /proc and /dev; no /etc (so no /etc/shadow or passwd), no /home, no /root (except a bound interpreter prefix
  below it, read-only), no project or host temporary files. Writes outside /sandbox fail.
- network: a new network namespace has only a down loopback, so neither the internet nor the host's 127.0.0.1
  is reachable; seccomp also refuses sockets other than AF_UNIX.
Not contained: kernel exploits (a bug in a syscall reachable from a user namespace; seccomp narrows the
surface but allows most syscalls), CPU-cache and timing side channels, the CPU contention and page cache a run
causes the host, reading what /usr holds (world-readable system files), and programs bwrap itself cannot start
(we rely on the kernel's user namespaces). On the host the sandboxed uid is the caller's (root here): an escape
through the kernel would be root. Without a writable cgroup, a run started as root has no process cap.

Defaults (SandboxLimits): cpu_s 5, wall_s 10, memory_mb 512, max_processes 32, max_output_bytes 65536 per
stream, max_file_bytes 16 MiB; the tmpfs is memory_mb in size.
"""

from r1lab.sandbox.run import SandboxLimits, SandboxResult, check_sandbox, run_python, sandbox_problem

__all__ = ["SandboxLimits", "SandboxResult", "check_sandbox", "run_python", "sandbox_problem"]
