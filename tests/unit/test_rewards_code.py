"""The `code` reward: the fraction of hidden tests passed in the sandbox, on solutions whose score is known,
and the reward hacks it must not pay for."""

from __future__ import annotations

import shutil

import pytest

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner, load_reward
from r1lab.rewards.code import extract_code
from r1lab.sandbox import check_sandbox, sandbox_problem

MISSING = sandbox_problem()
needs_sandbox = pytest.mark.skipif(MISSING is not None, reason=f"sandbox unavailable: {MISSING}")

TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


def answer(code: str) -> str:
    return f"Let me write it.\n```python\n{code}\n```\nDone."


def score(completion: str, tests=TESTS, **kwargs) -> float | None:
    return load_reward(RewardSpec(name="code", kwargs=kwargs))(completion, prompt="q", tests=tests)


def test_extract_code_takes_the_last_python_block():
    text = "```python\nx = 1\n```\ntext\n```py\ny = 2\n```\n```bash\nls\n```"
    assert extract_code(text) == "y = 2\n"
    assert extract_code("no code here, `inline` only") is None
    assert extract_code("```python\nunclosed = True\n") is None


@needs_sandbox
def test_fraction_of_tests_passed():
    assert score(answer("def add(a, b):\n    return a + b")) == 1.0
    # wrong only where a is negative: passes tests 0 and 2
    assert score(answer("def add(a, b):\n    return abs(a) + b")) == pytest.approx(2 / 3)
    assert score(answer("def add(a, b):\n    return a * b")) == pytest.approx(1 / 3)  # only 2 * 2 == 2 + 2
    assert score("def add(a, b): return a + b  (no block)") == 0.0
    assert score(answer("def add(a, b) return a + b")) == 0.0  # a syntax error fails every test
    assert score(answer("def add(a, b):\n    return a + b"), tests=None) is None  # no tests: not applicable
    json_tests = '["assert add(1, 2) == 3", "assert add(1, 1) == 3"]'  # a CSV / JSON-string column
    assert score(answer("def add(a, b):\n    return a + b"), tests=json_tests) == 0.5


@needs_sandbox
def test_a_hanging_test_fails_alone():
    code = "def add(a, b):\n    while a < 0:\n        pass\n    return a + b"
    assert score(answer(code), timeout_s=6) == pytest.approx(2 / 3)  # 1.2 s for the hanging one


@needs_sandbox
@pytest.mark.parametrize(
    "hack",
    [
        "import sys\nsys.exit(0)",  # leave before the tests, status 0
        "import os\nos._exit(0)",
        "print('0 0 1\\n0 1 1\\n0 2 1')\nprint('passed')",  # forged result lines without the token
        "src = open('tests.json').read()\ndef add(a, b):\n    return 3",  # read the hidden tests
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    ],
)
def test_reward_hacks_score_nothing(hack: str):
    assert score(answer(hack)) == 0.0


@needs_sandbox
def test_through_the_reward_worker_with_accuracy():
    bodies = ["a + b", "abs(a) + b", "a * b"]  # all, 2 of 3 and 1 of 3 tests
    completions = [answer(f"def add(a, b):\n    return {body}") for body in bodies]
    rows = [{"tests": TESTS, "completion_length": 5, "max_completion_length": 10}] * 3
    with RewardRunner([RewardSpec(name="code")], isolated=True) as runner:
        batch = runner.score(completions, ["q"] * 3, rows)
    assert batch.per_function["code"] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert batch.accuracy.tolist() == [1.0, 0.0, 0.0] and batch.failures == {"code": 0}


def test_bad_kwargs_and_a_missing_sandbox_fail_at_load(monkeypatch):
    with pytest.raises(UserError, match="timeout_s must be a positive number"):
        load_reward(RewardSpec(name="code", kwargs={"timeout_s": 0}))
    check_sandbox.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    try:
        with pytest.raises(UserError, match="bubblewrap"):
            load_reward(RewardSpec(name="code"))
    finally:
        monkeypatch.undo()
        check_sandbox.cache_clear()
