"""A seccomp filter for the sandbox, compiled with libseccomp through ctypes and handed to bubblewrap as BPF.

Default allow; these fail with EPERM: sockets of any family but AF_UNIX (the network namespace already has no
route out; this is a second wall), and the syscalls a contained program has no use for that widen the kernel's
attack surface (ptrace, mount, namespaces, keyrings, bpf, perf, modules, io_uring, userfaultfd, reboot, ...).
Syscalls of a foreign architecture (x32 / i386 entry points) kill the process (libseccomp's default).
Where libseccomp is not installed, `filter_fd()` returns None and the run goes without (namespaces still hold).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from functools import lru_cache

_ALLOW = 0x7FFF0000
_ERRNO_EPERM = 0x00050000 | errno.EPERM
_CMP_NE = 1
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare",
    "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "open_by_handle_at", "name_to_handle_at",
    "fsopen", "fsmount", "move_mount", "open_tree", "syslog", "personality",
)  # fmt: skip


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp")
    for candidate in ([name] if name else []) + ["libseccomp.so.2"]:
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
        ]  # fmt: skip
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        return lib
    return None


def available() -> bool:
    return _library() is not None


@lru_cache(maxsize=1)
def _program() -> bytes | None:
    """The compiled BPF program (built once per process)."""
    lib = _library()
    if lib is None:
        return None
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        return None
    try:
        not_unix = (_ArgCmp * 1)(_ArgCmp(0, _CMP_NE, socket.AF_UNIX, 0))
        rules = [("socket", 1, not_unix)] + [(name, 0, None) for name in DENIED]
        for name, count, args in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a syscall on this architecture
                continue
            if lib.seccomp_rule_add_array(ctx, _ERRNO_EPERM, number, count, args) != 0:
                raise OSError(f"libseccomp refused the rule for {name}")
        fd = os.memfd_create("r1lab-seccomp-export", 0)
        try:
            if lib.seccomp_export_bpf(ctx, fd) != 0:
                raise OSError("seccomp_export_bpf failed")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int | None:
    """A readable memfd holding the BPF program, for bwrap's `--seccomp FD`; None without libseccomp."""
    program = _program()
    if program is None:
        return None
    fd = os.memfd_create("r1lab-seccomp", 0)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
