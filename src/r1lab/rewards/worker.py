"""Reward calls in a child process, so that a hanging or crashing function can be killed without losing the run.

A Python function stuck in a loop cannot be stopped from a thread, so the calls run in one long-lived worker
process. The parent sends a whole batch at once; the worker answers in chunks (one message per ~2 ms of work,
so 64 fast calls cost about one round trip) and marks in shared memory which call it is running, so the parent
knows which call is late: past its deadline the worker is killed, that call fails, and a fresh worker (forked
in milliseconds) takes the rest.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import numbers
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from r1lab.config import RewardSpec
from r1lab.rewards.loader import LoadedReward, load_reward

Call = tuple[int, int]  # (reward index, sample index); sample -1: the whole batch of a batched reward
# (reward, sample, status, payload): status "ok" (payload: float | None, or for a batched reward a list of
# ("ok" | "fail", value) per sample), "fail" (payload: error message) or "badlen" (payload: message).
Result = tuple[int, int, str, Any]
Batch = tuple[list[str], list[str], list[dict[str, Any]]]  # completions, prompts, columns


def check_value(label: str, value: Any) -> float | None:
    """A reward value as float or None; any other type (or NaN/inf) is the function's mistake."""
    if value is None:
        return None
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"reward {label!r} returned {number}; it must return a finite float or None")
        return number
    raise TypeError(
        f"reward {label!r} returned a {type(value).__name__} ({str(value)[:60]!r}); it must return a float or None"
    )


def evaluate(reward: LoadedReward, call: Call, batch: Batch) -> Result:
    """Run one call, catching whatever the user function does wrong."""
    r, i = call
    completions, prompts, columns = batch
    try:
        if i >= 0:
            row = {k: v for k, v in columns[i].items() if k not in ("completion", "prompt")}
            return r, i, "ok", check_value(reward.label, reward(completions[i], prompt=prompts[i], **row))
        keys = set().union(*columns) - {"completion", "prompts"} if columns else set()
        lists = {k: [c.get(k) for c in columns] for k in keys}
        values = reward(completions, prompts=prompts, **lists)
        if not isinstance(values, Sequence) and not hasattr(values, "tolist"):
            raise TypeError(f"batched reward {reward.label!r} returned a {type(values).__name__}, not a list")
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        if len(values) != len(completions):
            message = f"batched reward {reward.label!r} returned {len(values)} values for {len(completions)}"
            return r, i, "badlen", message
        return r, i, "ok", [_checked(reward.label, v) for v in values]
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a user function may even call sys.exit; the sample fails, the run goes on
        return r, i, "fail", f"{type(e).__name__}: {e}"


def _checked(label: str, value: Any) -> tuple[str, Any]:
    try:
        return "ok", check_value(label, value)
    except (TypeError, ValueError) as e:
        return "fail", f"{type(e).__name__}: {e}"


FLUSH_SECONDS = 0.002  # the worker sends its answers in chunks covering about this much work
TIMEOUTS_IN_A_ROW = 3  # then the function's remaining calls in the batch fail without running


def _die_with_parent() -> None:
    """End this worker when its parent dies, even by SIGKILL (Linux). The forked child holds a copy of the
    parent's pipe end, so `recv` would never see EOF and the worker would live on as an orphan."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _reload(spec: RewardSpec, is_parse_check: bool) -> LoadedReward:
    loaded = load_reward(spec)
    check = loaded.parse_check() if is_parse_check else loaded
    assert check is not None
    return check


def _serve(
    conn: Any, started: Any, specs: list[tuple[RewardSpec, bool]], rewards: list[LoadedReward] | None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent()
    if rewards is None:  # spawned, not forked: load the functions again here
        try:
            rewards = [_reload(*s) for s in specs]
        except BaseException as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))
            return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        batch, calls = job
        chunk: list[Result] = []
        flushed = time.perf_counter()
        for k, call in enumerate(calls):
            started.value = k  # tells the parent which call to blame if no answer comes
            chunk.append(evaluate(rewards[call[0]], call, batch))
            if time.perf_counter() - flushed > FLUSH_SECONDS or k == len(calls) - 1:
                conn.send(chunk)
                chunk, flushed = [], time.perf_counter()


class Worker:
    """One reward process. `run` returns a result per call; a call past its deadline gets a failure."""

    STARTUP_TIMEOUT = 120.0  # seconds; a spawned worker imports r1lab and the reward modules first
    TICK = 0.02  # seconds between checks of the running call's deadline

    def __init__(self, rewards: list[LoadedReward]) -> None:
        self.rewards = rewards
        # fork is fast and inherits the loaded functions; spawn (macOS, Windows) reloads them in the child.
        self.ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self.process: Any = None
        self.conn: Any = None
        self.started: Any = None
        self.restarts = 0
        self.skipped = 0  # calls failed without running (see _skip_timing_out)

    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.started = self.ctx.RawValue("q", -1)
        forked = self.ctx.get_start_method() == "fork"
        specs = [(r.spec, r.is_parse_check) for r in self.rewards]
        args = (child, self.started, specs, self.rewards if forked else None)
        self.process = self.ctx.Process(target=_serve, args=args, daemon=True, name="r1lab-rewards")
        self.process.start()
        child.close()
        self.conn = parent
        if not parent.poll(self.STARTUP_TIMEOUT):
            self.kill()
            raise RuntimeError("the reward worker process did not start")
        status, message = parent.recv()
        if status != "ready":
            self.kill()
            raise RuntimeError(f"the reward worker could not load the reward functions: {message}")

    def run(self, batch: Batch, calls: list[Call]) -> list[Result]:
        results: list[Result] = []
        pending = calls
        try:
            while pending:
                if self.process is None:
                    self.start()
                self.started.value = -1
                self.conn.send((batch, pending))
                pending = self._skip_timing_out(self._collect(pending, results), results)
        except BaseException:
            self.kill()  # mid-batch, its queued answers would be read as the next batch's
            raise
        return results

    def _skip_timing_out(self, pending: list[Call], results: list[Result]) -> list[Call]:
        """After TIMEOUTS_IN_A_ROW calls of one function in a row timed out, its other calls in this batch fail
        at once instead of each waiting out the timeout (a function that always hangs costs that many timeouts
        per batch, not one per sample). The next batch tries it again."""
        if not results or not str(results[-1][3]).startswith("TimeoutError"):
            return pending
        r = results[-1][0]
        own = [res for res in results if res[0] == r]
        if len(own) < TIMEOUTS_IN_A_ROW or not all(
            res[2] == "fail" and str(res[3]).startswith("TimeoutError") for res in own[-TIMEOUTS_IN_A_ROW:]
        ):
            return pending
        timeout = self.rewards[r].spec.timeout
        message = (
            f"TimeoutError: not run: {TIMEOUTS_IN_A_ROW} calls of this function in a row timed out "
            f"(after {timeout:g}s each) in this batch"
        )
        self.skipped += sum(c[0] == r for c in pending)
        results.extend((c[0], c[1], "fail", message) for c in pending if c[0] == r)
        return [c for c in pending if c[0] != r]

    def _collect(self, pending: list[Call], results: list[Result]) -> list[Call]:
        """Read answers for `pending` into `results`; return the calls still to run (after a late or dead one).

        A call that runs past its timeout (or kills the worker) fails; calls the worker finished but had not
        sent yet are lost with it and run again on a fresh worker.
        """
        received = 0
        running, since = -1, time.perf_counter()
        while received < len(pending):
            failure = None
            if self.conn.poll(self.TICK):
                try:
                    chunk = self.conn.recv()
                    results.extend(chunk)
                    received += len(chunk)
                    continue
                except (EOFError, OSError):
                    self.process.join(1)
                    failure = f"the reward process died (exit code {self.process.exitcode})"
            now, current = time.perf_counter(), self.started.value
            if current != running:
                running, since = current, now
            timeout = self.rewards[pending[max(running, received)][0]].spec.timeout
            if failure is None and now - since <= timeout:
                continue
            late = max(running, received)
            r, i = pending[late]
            results.append((r, i, "fail", failure or f"TimeoutError: no result after {timeout:g}s"))
            self.kill()
            self.restarts += 1
            return pending[received:late] + pending[late + 1 :]
        return []

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.conn.close()
        self.process = self.conn = None

    def close(self) -> None:
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(1)
            except OSError:
                pass
        self.kill()
