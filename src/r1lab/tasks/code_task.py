"""Code: write a small Python function from a description, checked by hidden unit tests (reward `code`).

Problems come from templates with seeded parameters (digit sums with a threshold, list filters and maps, counts
in a range, letter swaps, Caesar shifts, sums of multiples, long words). The prompt names the function, says what
it returns and gives one example call with its result. `tests` holds the hidden tests in the form the `code`
reward reads (a list of `assert f(...) == ...` snippets); their expected values come from the gold solution,
and they never use the prompt's example input.

The demonstration is a tool conversation: the assistant writes the function and runs it on the example with the
`python` tool (`print(repr(f(example)))`), reads the output, and ends with the function in a ```python block.
With probability `fix_rate` the first version has a typical bug (a comparison off by one, a swap done in two
steps, no wrap-around) that the example shows: the assistant reads the wrong output, says what is wrong, fixes it
and runs it again. The tool outputs in the demonstration are the program's real output, computed here by
running the (template-written) code in this process; tests/unit/test_tool_tasks.py checks that the sandboxed
`python` tool prints the same. Like lookup, a record has `messages`, `completion` and `tools` (the python tool's
schema; see r1lab.tasks.lookup).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from r1lab.tasks.base import TASKS, Task, require
from r1lab.tasks.tool_turns import flatten, tool_call_text
from r1lab.tools.builtin import python_schema

N_TESTS = 5


@dataclass
class Spec:
    """One generated problem before its inputs are drawn."""

    key: str
    name: str
    params: str  # the signature's parameters, e.g. "n"
    returns: str  # "returns ..." sentence of the prompt
    gold: str  # the solution's source
    buggy: str | None  # a plausible wrong first version, or None
    why: str  # what the buggy version gets wrong (for the demonstration)
    inputs: Callable[[random.Random], tuple]  # one random argument tuple


def _ints(rng: random.Random, lo: int = -20, hi: int = 30) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(0, 8))]


def _text(rng: random.Random, letters: str = "abcdefghij") -> str:
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(1, 5))]
    return " ".join(words)


def _digits(rng: random.Random) -> Spec:
    op = rng.choice(["sum", "product", "count"])
    cmp, k = rng.choice([">", "<", ">=", "<="]), rng.randint(1, 8)
    wrong = {">": ">=", "<": "<=", ">=": ">", "<=": "<"}[cmp]
    word = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most"}[cmp]
    start, update, empty = {"sum": ("0", "total += d", 0), "product": ("1", "total *= d", 1)}.get(
        op, ("0", "total += 1", 0)
    )
    what = {
        "sum": "the sum of the digits",
        "product": "the product of the digits",
        "count": "how many digits",
    }[op]

    def code(c: str) -> str:
        return (
            f"def digit_{op}(n):\n    total = {start}\n    for ch in str(n):\n        d = int(ch)\n"
            f"        if d {c} {k}:\n            {update}\n    return total"
        )

    are = "are" if op == "count" else "that are"
    returns = f"returns {what} of the non-negative integer `n` {are} {word} {k}"
    if op != "count":
        returns += f" ({empty} when there are none)"
    equal = "does not count" if len(cmp) == 1 else "counts too"
    return Spec(
        f"digits:{op}:{cmp}:{k}",
        f"digit_{op}",
        "n",
        returns,
        code(cmp),
        code(wrong),
        f"A digit equal to {k} {equal}, so the test is `{cmp}`, not `{wrong}`.",
        lambda r: (r.randint(0, 10 ** r.randint(1, 9)),),
    )


def _filter_map(rng: random.Random) -> Spec:
    kind = rng.choice(["gt", "lt", "div", "notdiv", "odd", "even"])
    t, m = rng.randint(-10, 20), rng.randint(2, 9)
    cond, wrong, says = {
        "gt": (f"x > {t}", f"x >= {t}", f"are greater than {t}"),
        "lt": (f"x < {t}", f"x <= {t}", f"are less than {t}"),
        "div": (f"x % {m} == 0", f"x % {m} == 0 and x > 0", f"are divisible by {m}"),
        "notdiv": (f"x % {m} != 0", f"x % {m} != 0 and x > 0", f"are not divisible by {m}"),
        "odd": ("x % 2 == 1", "x % 2 == 1 and x > 0", "are odd"),
        "even": ("x % 2 == 0", "x % 2 == 0 and x > 0", "are even"),
    }[kind]
    how = rng.choice(["same", "times", "plus", "square"])
    c = rng.randint(2, 9)
    expr, said = {
        "same": ("x", "the elements"),
        "times": (f"x * {c}", f"{c} times each element"),
        "plus": (f"x + {c}", f"each element plus {c}"),
        "square": ("x * x", "the square of each element"),
    }[how]
    param = {"gt": t, "lt": t, "div": m, "notdiv": m}.get(kind, "")
    why = (
        f"The test must be exactly `{cond}`: an element equal to {t} does not count."
        if kind in ("gt", "lt")
        else f"The test must be exactly `{cond}`, with no `x > 0`: numbers below 1 count too."
    )
    return Spec(
        f"filter:{kind}{param}:{how}{c if how in ('times', 'plus') else ''}",
        "transform",
        "xs",
        f"returns a list of {said} of the list of integers `xs` that {says}, in their order",
        f"def transform(xs):\n    return [{expr} for x in xs if {cond}]",
        f"def transform(xs):\n    return [{expr} for x in xs if {wrong}]",
        why,
        lambda r: (_ints(r),),
    )


def _count_between(rng: random.Random) -> Spec:
    a = rng.randint(-10, 25)
    b = a + rng.randint(1, 15)
    inclusive = rng.random() < 0.5
    right, wrong = (
        (f"{a} <= x <= {b}", f"{a} < x < {b}") if inclusive else (f"{a} < x < {b}", f"{a} <= x <= {b}")
    )
    says = f"at least {a} and at most {b}" if inclusive else f"strictly between {a} and {b}"
    return Spec(
        f"between:{a}:{b}:{inclusive}",
        "count_between",
        "xs",
        f"returns how many elements of the list of integers `xs` are {says}",
        f"def count_between(xs):\n    return sum(1 for x in xs if {right})",
        f"def count_between(xs):\n    return sum(1 for x in xs if {wrong})",
        f"The bounds {a} and {b} " + ("count too." if inclusive else "do not count."),
        lambda r: ([r.randint(a - 5, b + 5) for _ in range(r.randint(0, 9))],),
    )


def _swap_letters(rng: random.Random) -> Spec:
    x, y = sorted(rng.sample(string.ascii_lowercase, 2))
    return Spec(
        f"swap:{x}{y}",
        "swap_letters",
        "s",
        f"returns the string `s` with every '{x}' replaced by '{y}' and every '{y}' replaced by '{x}'",
        f"def swap_letters(s):\n    return s.translate(str.maketrans({x + y!r}, {y + x!r}))",
        f"def swap_letters(s):\n    return s.replace({x!r}, {y!r}).replace({y!r}, {x!r})",
        f"Replacing in two steps turns the new '{y}'s back into '{x}'s; both swaps must happen at once.",
        lambda r: (_text(r, f"{x}{y}{x}{y}aeiost"),),
    )


def _caesar(rng: random.Random) -> Spec:
    k = rng.randint(1, 25)
    name = rng.choice(["shift", "rotate", "encode"])
    return Spec(
        f"caesar:{k}:{name}",
        name,
        "s",
        f"returns `s` with every lowercase letter moved {k} places forward in the alphabet, wrapping around "
        "from 'z' to 'a'; other characters stay as they are",
        f"def {name}(s):\n    out = []\n    for ch in s:\n        if 'a' <= ch <= 'z':\n"
        f"            ch = chr((ord(ch) - ord('a') + {k}) % 26 + ord('a'))\n        out.append(ch)\n"
        "    return ''.join(out)",
        f"def {name}(s):\n    out = []\n    for ch in s:\n        if 'a' <= ch <= 'z':\n"
        f"            ch = chr(ord(ch) + {k})\n        out.append(ch)\n    return ''.join(out)",
        "Letters near the end of the alphabet must wrap around to 'a': the shift is taken modulo 26.",
        lambda r: (_text(r, "abcdefghijklmnopqrstuvwxyz"),),
    )


def _multiples(rng: random.Random) -> Spec:
    a, b = sorted(rng.sample(range(2, 21), 2))
    return Spec(
        f"multiples:{a}:{b}",
        "sum_multiples",
        "n",
        f"returns the sum of the positive integers below `n` that are multiples of {a} or of {b}",
        f"def sum_multiples(n):\n    return sum(i for i in range(1, n) if i % {a} == 0 or i % {b} == 0)",
        f"def sum_multiples(n):\n    return sum(i for i in range(1, n + 1) if i % {a} == 0 or i % {b} == 0)",
        "Only numbers below `n` count, so the range must stop before `n`.",
        lambda r: (r.choice([a, b, a * b, r.randint(1, 200)]),),
    )


def _long_words(rng: random.Random) -> Spec:
    k, sep, longer = rng.randint(1, 6), rng.choice([" ", ",", "-", "_"]), rng.random() < 0.5
    cmp, wrong, says = (">", ">=", "more than") if longer else ("<", "<=", "fewer than")
    return Spec(
        f"words:{k}:{sep}:{cmp}",
        "pick_words",
        "s",
        f"returns the words of `s` (separated by single spaces) that have {says} {k} letters, in their "
        f"order, joined by {sep!r}",
        f"def pick_words(s):\n    return {sep!r}.join(w for w in s.split(' ') if len(w) {cmp} {k})",
        f"def pick_words(s):\n    return {sep!r}.join(w for w in s.split(' ') if len(w) {wrong} {k})",
        f"A word of exactly {k} letters does not count: the test is `{cmp} {k}`.",
        lambda r: (_text(r),),
    )


TEMPLATES = (_digits, _filter_map, _count_between, _swap_letters, _caesar, _multiples, _long_words)


def function(source: str, name: str) -> Callable[..., Any]:
    """The function `name` defined by `source`: template-written code of r1lab's own, never a model's."""
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def _args(args: tuple) -> str:
    return ", ".join(repr(a) for a in args)


@TASKS.register("code")
class CodeTask(Task):
    name = "code"
    reward = "code"
    defaults: ClassVar[dict[str, Any]] = {"fix_rate": 0.3}
    description = "write a small function (hidden unit tests); the demonstration runs it with the python tool"

    def check(self, opts: dict[str, Any]) -> None:
        require(
            0.0 <= opts["fix_rate"] <= 1.0, self.name, f"fix_rate must be in [0, 1], got {opts['fix_rate']}"
        )

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        spec = rng.choice(TEMPLATES)(rng)
        # the inputs are drawn in solve, only for the problems kept (from this seed, so still deterministic)
        record = {"prompt": "", "answer": "", "tests": [], "template": spec.key.split(":")[0]}
        return spec.key, {**record, "_spec": spec, "_seed": rng.random(), "_fix_rate": opts["fix_rate"]}

    def solve(self, record: dict) -> str:
        """Draws the inputs, writes the prompt, the hidden tests and the demonstration into `record`."""
        spec, rng = record["_spec"], random.Random(record["_seed"])
        cases: dict[str, tuple] = {}
        for _ in range(40):  # distinct inputs; those the buggy version gets wrong are put first
            args = spec.inputs(rng)
            cases.setdefault(repr(args), args)
        inputs = list(cases.values())
        right_fn = function(spec.gold, spec.name)
        wrong_fn = function(spec.buggy, spec.name) if spec.buggy else right_fn
        gold = [right_fn(*a) for a in inputs]
        bad = [wrong_fn(*a) for a in inputs]
        shows = [i for i in range(len(inputs)) if bad[i] != gold[i]]
        fix = len(shows) >= 2 and rng.random() < record["_fix_rate"]  # a hidden test shows the bug too
        example = shows[0] if fix else 0
        rest = [i for i in range(len(inputs)) if i != example]
        chosen = [i for i in rest if i in shows][:2]  # tests the buggy version fails, where there are any
        chosen += [i for i in rest if i not in chosen][: N_TESTS - len(chosen)]
        shown = f"{spec.name}({_args(inputs[example])})"
        right, wrong = repr(gold[example]), repr(bad[example])
        record["prompt"] = (
            f"Write a Python function `{spec.name}({spec.params})` that {spec.returns}. For example, `{shown}` "
            f"returns `{right}`. You can run code with the `python` tool. End your answer with the complete "
            "function in a ```python code block."
        )
        record["answer"] = spec.gold
        record["tests"] = [f"assert {spec.name}({_args(inputs[i])}) == {gold[i]!r}" for i in sorted(chosen)]

        def run(code: str) -> str:
            return tool_call_text("python", {"code": f"{code}\n\nprint(repr({shown}))"})

        first = spec.buggy if fix else spec.gold
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": record["prompt"]},
            {
                "role": "assistant",
                "content": f"I write `{spec.name}` and run it on the example.\n{run(first)}",
            },
            {"role": "tool", "name": "python", "content": wrong if fix else right},
        ]
        if fix:
            messages += [
                {
                    "role": "assistant",
                    "content": f"It prints {wrong}, but the example expects {right}. {spec.why} "
                    f"I fix it and run it again.\n{run(spec.gold)}",
                },
                {"role": "tool", "name": "python", "content": right},
            ]
        final = f"It prints {right}, as the example expects.\n\n```python\n{spec.gold}\n```"
        messages.append({"role": "assistant", "content": final})
        record["messages"] = messages
        record["tools"] = [python_schema()]  # SFT on these rows renders them as the rollout does
        return flatten(messages)
