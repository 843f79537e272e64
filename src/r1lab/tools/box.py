"""A tool box: the tools of a run, their schemas, and `run(call)`, which never raises.

Whatever goes wrong with a call (unknown tool, a body that is not JSON, arguments that do not fit the schema, a
tool that raises or hangs, a huge output) comes back as a ToolResult with the error as text for the model, and is
counted in `stats`.

Where tools run: user tools (`module:function`) run in one long-lived child process (forked on Linux, so it
starts in milliseconds and inherits the loaded functions), because a Python function stuck in a loop cannot be
stopped from a thread: past `timeout_s` the child is killed (SIGKILL) and the next user-tool call starts a fresh
one. The built-ins run in this process: `calculator` bounds its own work (exponent and result size), `search`
is an in-memory BM25 lookup, and `python` is a call into the sandbox, which enforces its own wall time.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from r1lab.tools.calls import ToolCall, ToolResult
from r1lab.tools.schema import check_arguments


@dataclass
class Tool:
    """A callable with its OpenAI function schema. `isolated`: run it in the child process (user tools)."""

    fn: Callable[..., Any]
    schema: dict[str, Any]
    isolated: bool = True

    @property
    def name(self) -> str:
        return self.schema["function"]["name"]


@dataclass
class ToolStats:
    """Counters since the tool box was made (or since `reset`), for metrics."""

    calls: int = 0
    errors: int = 0  # every call that returned an error, whatever the cause
    unknown: int = 0
    invalid_json: int = 0
    bad_arguments: int = (
        0  # a malformed call (no name, arguments not an object) or arguments not fitting the schema
    )
    truncated: int = 0
    timeouts: int = 0
    seconds: float = 0.0

    def as_metrics(self, prefix: str = "tools/") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


class ToolBox:
    def __init__(self, tools: list[Tool], timeout_s: float = 10, max_output_chars: int = 4000) -> None:
        names = [t.name for t in tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two tools share the name(s) {duplicates}")
        self.tools = {t.name: t for t in tools}
        self.timeout_s, self.max_output_chars = timeout_s, max_output_chars
        self.stats = ToolStats()
        self._worker = _Worker({n: t.fn for n, t in self.tools.items() if t.isolated})

    def schemas(self) -> list[dict[str, Any]]:
        """The tools' OpenAI function schemas, for `tokenizer.apply_chat_template(..., tools=...)`."""
        return [t.schema for t in self.tools.values()]

    def system_prompt_fallback(self) -> str:
        """The tool instructions for a chat template without tool support: the Hermes/Qwen system text."""
        from r1lab.data.tool_rows import fallback_instructions

        return fallback_instructions(self.schemas())

    def run(self, call: ToolCall) -> ToolResult:
        """Run one parsed call; errors come back as text (see the module docstring)."""
        self.stats.calls += 1
        started = time.perf_counter()
        result = self._run(call)
        result.seconds = time.perf_counter() - started
        self.stats.seconds += result.seconds
        if result.error:
            self.stats.errors += 1
        if len(result.content) > self.max_output_chars:
            cut = len(result.content) - self.max_output_chars
            result.content = result.content[: self.max_output_chars] + f"\n[truncated: {cut} more characters]"
            result.truncated = True
            self.stats.truncated += 1
        return result

    def _run(self, call: ToolCall) -> ToolResult:
        if call.error:
            if call.invalid_json:
                self.stats.invalid_json += 1
            else:
                self.stats.bad_arguments += 1
            return ToolResult(f"Error: {call.error}", error=True)
        tool = self.tools.get(call.name)
        if tool is None:
            self.stats.unknown += 1
            known = ", ".join(self.tools) or "none"
            return ToolResult(f"Error: unknown tool {call.name!r}; the tools are: {known}", error=True)
        problem = check_arguments(call.arguments, tool.schema["function"].get("parameters", {}))
        if problem:
            self.stats.bad_arguments += 1
            return ToolResult(f"Error: {call.name}: {problem}", error=True)
        if tool.isolated:
            status, text = self._worker.call(call.name, call.arguments, self.timeout_s)
        else:
            status, text = _invoke(tool.fn, call.arguments)
        if isinstance(
            text, ToolResult
        ):  # a built-in that reports its own outcome (python: exit code, time limit)
            self.stats.timeouts += text.timed_out
            return text
        if status == "timeout":
            self.stats.timeouts += 1
            message = f"Error: {call.name} did not finish within {self.timeout_s:g} s and was stopped"
            return ToolResult(message, error=True, timed_out=True)
        return ToolResult(
            text if status == "ok" else f"Error: {call.name} failed: {text}", error=status != "ok"
        )

    def close(self) -> None:
        """Stop the user tools' child process (a later call starts a new one)."""
        self._worker.stop()

    def __enter__(self) -> ToolBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _invoke(fn: Callable[..., Any], arguments: dict[str, Any]) -> tuple[str, str | ToolResult]:
    try:
        value = fn(**arguments)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a tool may even call sys.exit; the call fails, the run goes on
        return "error", f"{type(e).__name__}: {e}"
    if isinstance(value, (str, ToolResult)):
        return "ok", value
    try:
        return "ok", json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return "ok", str(value)


def _serve(conn: Any, functions: dict[str, Callable[..., Any]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if sys.platform.startswith("linux"):  # end with the parent, even when it is SIGKILLed
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        name, arguments = job
        conn.send(_invoke(functions[name], arguments))


@dataclass
class _Worker:
    """The child process that runs user tools; killed past a call's timeout, restarted on the next call."""

    functions: dict[str, Callable[..., Any]]
    process: Any = None
    conn: Any = None
    restarts: int = field(default=0)

    def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> tuple[str, str | ToolResult]:
        if self.process is None or not self.process.is_alive():
            self._start()
        try:
            self.conn.send((name, arguments))
            if not self.conn.poll(timeout_s):
                self.stop(kill=True)
                return "timeout", ""
            return self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(1)  # EOF comes as the process ends; its exit code may take a moment
            code = self.process.exitcode
            self.stop(kill=True)
            return "error", f"the tool's process died (exit code {code})"
        except Exception as e:  # arguments or a result that cannot be pickled
            self.stop(kill=True)
            return "error", f"{type(e).__name__}: {e}"

    def _start(self) -> None:
        # fork is fast and inherits the loaded functions; spawn (macOS, Windows) must pickle them by reference.
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        parent, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, self.functions), daemon=True, name="r1lab-tools"
        )
        self.process.start()
        child.close()
        self.conn = parent
        self.restarts += 1

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if not kill:
            try:
                self.conn.send(None)
                self.process.join(2)
            except (OSError, BrokenPipeError):
                pass
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()
        self.process = self.conn = None
