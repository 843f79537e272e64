"""vLLM in its own process: `python -m r1lab.rollout.vllm_server MODEL` (or `r1lab vllm-serve MODEL`) holds one
vLLM `LLM` and serves the server-mode engine (r1lab.rollout.vllm_client) over TCP.

Why this design and not vLLM's OpenAI-compatible server: the RL loop needs per-token log-probs of token-id
prompts and a weight push after every optimizer step. The OpenAI server takes text or token prompts but has no
weight-loading endpoint of its own (peers add one: TRL's `trl vllm-serve` and verl wrap the engine in their own
server for that). So the server here is the colocated engine's code behind a socket: the same `build_llm`,
`generate_samples` and `load_weights` of r1lab.rollout.vllm, hence the same sampling, seeds, log-probs and
`reload_weights` path; only the transport is new.

Transport: `multiprocessing.connection` over TCP, authenticated by an HMAC challenge with the key in the
environment variable R1LAB_VLLM_AUTHKEY (the local server gets a random one from its parent; `vllm-serve`
prints one if it is unset). Each message is one pickled request or reply (stdlib pickle: tensors travel as
their bytes, never as shared-memory handles, so the two sides may be on different nodes). Requests:
`("health",)`, `("generate", prompt_ids, n, sampling, eos_ids)` -> samples (token ids, log-probs, finish
reasons; the client decodes), `("weights", bucket, last)` (the trainer's weights in buckets; with the last one
they are loaded in one reload and the prefix cache is reset), `("shutdown",)`. Replies are ("ok", value) or
("error", text). One thread per connection; a lock keeps one vLLM call at a time.

A server started by a trainer (`--parent-pid`) exits by itself when that process is gone, so a trainer killed
with SIGKILL leaves no server behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import secrets
import sys
import threading
import time
import traceback
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

AUTHKEY_ENV = "R1LAB_VLLM_AUTHKEY"


def send(conn: Connection, obj: Any) -> None:
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


class Server:
    """Answers requests on `listener` with the one `llm`; `serve_forever` returns after a shutdown request."""

    def __init__(self, llm: Any, listener: Listener, model: str, authkey: bytes) -> None:
        self.llm, self.listener, self.model, self.authkey = llm, listener, model, authkey
        self.lock = threading.Lock()
        self.stopping = False

    def serve_forever(self) -> None:
        while not self.stopping:
            try:
                conn = self.listener.accept()
            except (OSError, EOFError, AuthenticationError):  # a failed handshake (wrong key): keep serving
                continue
            if self.stopping:
                conn.close()
                break
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        self.listener.close()

    def _handle(self, conn: Connection) -> None:
        pending: list[Any] = []  # weight buckets of this connection until the last one
        with conn:
            while True:
                try:
                    request = receive(conn)
                except (EOFError, OSError):
                    return  # the client went away
                op = request[0]
                try:
                    reply = ("ok", self._answer(op, request[1:], pending))
                except Exception as e:  # the client raises it with this text
                    reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}")
                try:
                    send(conn, reply)
                except (EOFError, OSError):
                    return
                if op == "shutdown":
                    self._stop()
                    return

    def _answer(self, op: str, args: tuple, pending: list[Any]) -> Any:
        from r1lab.rollout.vllm import generate_samples, load_weights

        if op == "health":
            return {"model": self.model, "pid": os.getpid()}
        if op == "generate":
            with self.lock:
                return generate_samples(self.llm, *args)
        if op == "weights":
            bucket, last = args
            pending.extend(bucket)
            if last:
                with self.lock:
                    load_weights(self.llm, pending)
                pending.clear()
            return None
        if op == "shutdown":
            return None
        raise ValueError(f"unknown request {op!r}")

    def _stop(self) -> None:
        self.stopping = True
        host, port = self.listener.address
        with contextlib.suppress(OSError):  # wake the accept() of serve_forever
            Client((host if host not in ("0.0.0.0", "") else "127.0.0.1", port), authkey=self.authkey).close()


def _watch_parent(parent_pid: int) -> None:
    """Exit when the trainer that started this server is gone (its children are re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(3)


def serve(
    model: str,
    *,
    tokenizer: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.5,
    seed: int = 0,
    ready_file: Path | None = None,
    parent_pid: int | None = None,
) -> None:
    """Load the model into vLLM, listen on host:port (0: any free port) and serve until a shutdown request.
    `ready_file` gets {"host", "port", "pid"} once requests can be served."""
    from r1lab.rollout.vllm import build_llm

    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    key = os.environ.get(AUTHKEY_ENV)
    if not key:
        key = secrets.token_hex(16)
        print(
            f"{AUTHKEY_ENV} is unset; this server's key: {key}\n  on the trainer: export {AUTHKEY_ENV}={key}"
        )
    llm = build_llm(model, tokenizer or model, dtype, gpu_memory_utilization, seed, where="vllm-serve MODEL")
    listener = Listener((host, port), authkey=key.encode())
    server = Server(llm, listener, model, key.encode())
    bound_host, bound_port = listener.address
    print(f"vllm server: {model} on {bound_host}:{bound_port} (pid {os.getpid()})", flush=True)
    if ready_file is not None:  # written whole, then renamed: the parent never reads half a file
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"host": bound_host, "port": bound_port, "pid": os.getpid()}))
        tmp.replace(ready_file)
    server.serve_forever()
    print("vllm server: shut down", flush=True)
    _exit(0)


def _exit(code: int) -> None:
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":
        # vLLM runs in this process: nothing left to stop or write, and its teardown takes ~15 s on CPU
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m r1lab.rollout.vllm_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", help="model folder or hub id (its architecture; the trainer pushes weights)")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    a = parser.parse_args(argv)
    from r1lab.errors import UserError

    try:
        serve(
            a.model,
            tokenizer=a.tokenizer,
            host=a.host,
            port=a.port,
            dtype=a.dtype,
            gpu_memory_utilization=a.gpu_memory_utilization,
            seed=a.seed,
            ready_file=a.ready_file,
            parent_pid=a.parent_pid,
        )
    except UserError as e:
        print(f"error: {e.render()}", file=sys.stderr, flush=True)
        _exit(2)


if __name__ == "__main__":
    main()
