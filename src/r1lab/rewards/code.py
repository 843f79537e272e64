"""The `code` reward: the fraction of a problem's hidden unit tests that the completion's code passes, run in the
sandbox (r1lab.sandbox; LeTI, and the `code` task of issue 15).

The code is the last ```python (or ```py) block of the completion; no block scores 0. The tests are the dataset
column `tests` (kwarg `tests_key`): a list of Python snippets, usually one `assert` each (a JSON list in a string
is read too), each run after the solution in its namespace. A problem without tests scores None.

One sandbox run per completion: a harness reads a fresh random token from stdin, reads the solution and the tests
and deletes their files, runs the solution (module name `solution`, so an `if __name__ == "__main__":` block does
not run), then each test under its own alarm (timeout_s / (tests + 2) each), printing `<token> <i> <0|1>` after each. Only lines with the token
count, so the usual reward hacks score nothing: exiting early (sys.exit / os._exit before the tests), printing
"passed", reading the test file, hanging (the alarm, then the sandbox's wall time: tests reported until then
count). Not closed: a solution that digs the token out of the harness's own frames (sys._getframe) can forge
lines; the sandbox still holds it.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.registry import reward

_BLOCK = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

HARNESS = r"""
import json, os, signal, sys, traceback

def _main(limit):
    out = os.dup(1)
    token = sys.stdin.readline().strip()
    with open("solution.py") as f:
        solution = f.read()
    with open("tests.json") as f:
        tests = json.load(f)
    os.remove("solution.py"); os.remove("tests.json")

    class Timeout(BaseException):
        pass

    def alarm(*_):
        raise Timeout(f"over {limit}s")

    signal.signal(signal.SIGALRM, alarm)
    namespace = {"__name__": "solution"}

    def run(source, name):
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            exec(compile(source, name, "exec"), namespace)
            return True
        except BaseException:
            traceback.print_exc()
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    if not run(solution, "solution.py"):
        os._exit(1)
    for i, test in enumerate(tests):
        passed = run(test, f"test_{i}")
        os.write(out, f"{token} {i} {int(passed)}\n".encode())
    os._exit(0)

_main(LIMIT)
"""


def extract_code(completion: str) -> str | None:
    """The body of the last ```python block, or None."""
    blocks = _BLOCK.findall(completion)
    return blocks[-1] if blocks else None


def _has_code(completion: str, **_: Any) -> bool:
    return extract_code(completion) is not None


def _tests(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):
            return [text] if text else []
        value = json.loads(text)
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise ValueError(
            f"code reward: the tests column must be a list of Python snippets, got {value!r:.80}"
        )
    return list(value)


def _check(kwargs: dict[str, Any]) -> None:
    for key in ("timeout_s", "memory_mb"):
        value = kwargs.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UserError(
                f"code reward: {key} must be a positive number, got {value!r}",
                where=f"rewards[].kwargs.{key}",
                fix=f"e.g. {key}: {8 if key == 'timeout_s' else 512}",
            )
    from r1lab.sandbox import check_sandbox

    check_sandbox()  # a machine that cannot run the sandbox fails when the run starts, naming what is missing


@reward(
    "code",
    columns=lambda kw: [kw.get("tests_key", "tests")],
    correctness=True,
    check=_check,
    parses=_has_code,
)
def code_reward(
    completion: str, *, tests_key: str = "tests", timeout_s: float = 8.0, memory_mb: int = 512, **columns: Any
) -> float | None:
    """Passed tests / tests (1.0 counts as correct). timeout_s bounds the whole run (keep it under the reward
    spec's `timeout`, default 10 s); the solution and each test get timeout_s / (tests + 2) each."""
    from r1lab.sandbox import SandboxLimits, run_python

    tests = _tests(columns.get(tests_key))
    if not tests:
        return None
    code = extract_code(completion)
    if code is None:
        return 0.0
    token = secrets.token_hex(16)
    piece_s = timeout_s / (len(tests) + 2)  # the solution and each test: their sum stays under the wall time
    limits = SandboxLimits(cpu_s=timeout_s, wall_s=timeout_s, memory_mb=int(memory_mb))
    result = run_python(
        HARNESS.replace("LIMIT", repr(piece_s)),
        stdin=token + "\n",
        files={"solution.py": code, "tests.json": json.dumps(tests)},
        limits=limits,
    )
    passed = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == token and parts[2] == "1":
            passed.add(int(parts[1]))
    return len(passed & set(range(len(tests)))) / len(tests)
