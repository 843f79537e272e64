"""The server-mode vLLM engine (`rollout.engine: vllm`, `rollout.vllm_mode: server`): the colocated engine's
interface (generate with per-token log-probs, update_weights after every optimizer step, close) with vLLM in
its own process, r1lab.rollout.vllm_server, so generation and the update can run on different devices or nodes.

`rollout.server_address: null`: r1lab starts a local server (`python -m r1lab.rollout.vllm_server`, the same
Python, in its own session so a Ctrl-C meant for the trainer reaches the trainer only, its output in a log file
under the temp folder) and stops it with `close()`, when the engine is garbage-collected, or at exit; the
server also exits when its parent process is gone. `"host:port"`: connect to a server started by
`r1lab vllm-serve MODEL` (on another node) with the key in R1LAB_VLLM_AUTHKEY; close() only disconnects.

Failures are UserErrors naming the server: one that cannot start (its exit code and the end of its log),
one that stops answering (the local one's exit code and log; a remote one closing the connection), and an
address nobody listens on within `rollout.server_timeout`. That timeout also bounds each reply. The RL loop
does not checkpoint on such an error, so the newest checkpoint stays the last good one, and `--resume`
continues from it with a new server (the engine pushes the trainer's weights to a new server first).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import torch

from r1lab.config import RolloutConfig
from r1lab.errors import UserError
from r1lab.rollout.types import Rollouts, SamplingParams
from r1lab.rollout.vllm import hf_weights, llm_args, pad_and_eos, samples_to_rollouts
from r1lab.rollout.vllm_server import AUTHKEY_ENV, receive, send

BUCKET_BYTES = 256 << 20  # weights travel in messages of about this size
LOG_TAIL_LINES = 30
RESUME_FIX = (
    "the run's newest checkpoint is intact: fix the cause and rerun with --resume (a new server is started, "
    "or connected to, and given the trainer's weights)"
)


class LocalServer:
    """A vllm_server subprocess on 127.0.0.1 (any free port), its output in `log`."""

    def __init__(self, args: dict[str, Any], timeout: float) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="r1lab-vllm-server-"))
        self.log = self.folder / "server.log"
        self.authkey = secrets.token_hex(32).encode()
        ready = self.folder / "address.json"
        command = [sys.executable, "-m", "r1lab.rollout.vllm_server", args["folder"]]
        for key in ("tokenizer", "dtype", "gpu_memory_utilization", "seed"):
            command += [f"--{key.replace('_', '-')}", str(args[key])]
        command += ["--port", "0", "--ready-file", str(ready), "--parent-pid", str(os.getpid())]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=os.environ | {AUTHKEY_ENV: self.authkey.decode()},
                start_new_session=True,  # the terminal's Ctrl-C goes to the trainer, which stops the server
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise UserError(
                    f"the vLLM server could not start (exit code {self.proc.returncode}); the end of its log "
                    f"{self.log}:\n{self.tail()}",
                    where="rollout.vllm_mode: server",
                    fix="fix what the log names (a model vLLM cannot load: set rollout.engine: hf; vllm not "
                    "installed in this Python: see `make test-vllm`), or run the server yourself "
                    "(`r1lab vllm-serve MODEL`) and set rollout.server_address",
                )
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(
                    f"the vLLM server did not start within {timeout:g} s (its log: {self.log}):\n{self.tail()}",
                    where="rollout.server_timeout",
                    fix="raise rollout.server_timeout (a large model takes minutes to load)",
                )
            time.sleep(0.2)
        info = json.loads(ready.read_text())
        self.address = (info["host"], int(info["port"]))

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)"

    def dead(self, wait: float = 0.0) -> str | None:
        """Why the server is gone (exit code and log tail), None while it runs (after `wait` s)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait)
        if self.proc.returncode is None:
            return None
        return f"it exited with code {self.proc.returncode}; the end of its log {self.log}:\n{self.tail()}"

    def stop(self, grace: float = 30.0) -> None:
        """Wait up to `grace` s for a server told to shut down, then terminate (and kill) it."""
        for signal_it in (None, self.proc.terminate, self.proc.kill):
            if signal_it is not None:
                signal_it()
            try:
                self.proc.wait(grace if signal_it is None else 10.0)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.proc.returncode == 0:  # a clean shutdown: the log is of no more use
            shutil.rmtree(self.folder, ignore_errors=True)


class VLLMServerEngine:
    name = "vllm"

    def __init__(self, cfg: RolloutConfig, model: torch.nn.Module, tokenizer, *, seed: int = 0) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.tokenizer = tokenizer
        self.pad_token_id, self.eos_token_ids = pad_and_eos(base, tokenizer)
        self.timeout = cfg.server_timeout
        self.local: LocalServer | None = None
        if cfg.server_address is None:
            self.local = LocalServer(llm_args(cfg, base, tokenizer, seed=seed), cfg.server_timeout)
            address, authkey = self.local.address, self.local.authkey
        else:
            address, authkey = parse_address(cfg.server_address), remote_authkey()
        self.where = f"the vLLM server at {address[0]}:{address[1]}"
        self.lock = (
            threading.Lock()
        )  # one request and its reply at a time (rollout.async calls from a thread)
        try:
            self.conn = connect(address, authkey, cfg.server_timeout, self.where)
        except UserError:
            if self.local is not None:
                self.local.stop(grace=0.0)
            raise
        self._finalizer = weakref.finalize(self, _shut_down, self.conn, self.local)
        self.update_weights(model)

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        prompts = [list(map(int, p)) for p in prompt_ids]
        samples = self._call(("generate", prompts, n, sampling, self.eos_token_ids))
        return samples_to_rollouts(prompt_ids, samples, self.tokenizer, self.pad_token_id, sampling.stop)

    def update_weights(self, model: torch.nn.Module) -> None:
        """Send the trainer's current weights (LoRA merged) as CPU tensors in buckets; the server loads them
        with the last bucket and resets its prefix cache."""
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        with torch.no_grad():
            for name, tensor in hf_weights(model):
                bucket.append((name, tensor.to("cpu").contiguous()))
                size += tensor.numel() * tensor.element_size()
                if size >= BUCKET_BYTES:
                    self._call(("weights", bucket, False))
                    bucket, size = [], 0
        self._call(("weights", bucket, True))

    def close(self) -> None:
        """Stop the local server (a remote one: disconnect only). Also runs on garbage collection and at exit."""
        self._finalizer()

    def _call(self, request: tuple) -> Any:
        with self.lock:
            return self._exchange(request)

    def _exchange(self, request: tuple) -> Any:
        op = request[0]
        try:
            send(self.conn, request)
            waited = 0.0
            while not self.conn.poll(1.0):
                waited += 1.0
                if self.local is not None and self.local.dead():
                    raise EOFError
                if waited >= self.timeout:
                    raise UserError(
                        f"{self.where} did not answer a {op} request within {self.timeout:g} s",
                        where="rollout.server_timeout",
                        fix="raise rollout.server_timeout if the server is busy (a large batch), else restart "
                        f"it; {RESUME_FIX}",
                    )
            status, value = receive(self.conn)
        except (EOFError, OSError) as e:
            # a closed connection comes before the exit is seen: give the process a moment to be reaped
            why = self.local.dead(wait=5.0) if self.local is not None else None
            raise UserError(
                f"{self.where} stopped during a {op} request: "
                + (why or f"it closed the connection ({type(e).__name__}); see the server's own output"),
                where="rollout.vllm_mode: server",
                fix=RESUME_FIX,
            ) from e
        if status != "ok":
            raise UserError(f"{self.where} failed a {op} request: {value}", where="rollout.vllm_mode: server")
        return value


def _shut_down(conn: Connection, local: LocalServer | None) -> None:
    if local is not None and local.proc.poll() is None:
        try:
            send(conn, ("shutdown",))
            conn.poll(10.0)
        except (EOFError, OSError):
            pass
    conn.close()
    if local is not None:
        local.stop()


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of "host:port" (the config has checked the form)."""
    host, _, port = address.rpartition(":")
    return host, int(port)


def remote_authkey() -> bytes:
    key = os.environ.get(AUTHKEY_ENV)
    if not key:
        raise UserError(
            f"rollout.server_address is set but {AUTHKEY_ENV} is not",
            where="rollout.server_address",
            fix=f"export {AUTHKEY_ENV} with the key the server was started with (`r1lab vllm-serve` prints one "
            "when it is unset)",
        )
    return key.encode()


def connect(address: tuple[str, int], authkey: bytes, timeout: float, where: str) -> Connection:
    """Connect, retrying while nobody listens yet (a server still loading) until `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:  # a probe with a timeout: Client() itself would wait on an unreachable host for minutes
            socket.create_connection(address, timeout=max(deadline - time.monotonic(), 0.1)).close()
            return Client(address, authkey=authkey)
        except AuthenticationError as e:
            raise UserError(
                f"{where} refused this process's key",
                where=AUTHKEY_ENV,
                fix=f"export {AUTHKEY_ENV} with the key the server was started with",
            ) from e
        except OSError as e:
            if time.monotonic() + 0.5 > deadline:
                raise UserError(
                    f"nobody answered at {where.removeprefix('the vLLM server at ')} within {timeout:g} s "
                    f"({type(e).__name__}: {e})",
                    where="rollout.server_address",
                    fix="start the server there first (`r1lab vllm-serve MODEL --host 0.0.0.0 --port PORT`), "
                    "check host and port, or raise rollout.server_timeout",
                ) from e
            time.sleep(0.5)
