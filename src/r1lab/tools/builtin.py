"""The built-in tools: `calculator` (arithmetic read with ast, never eval), `search` (BM25 over a local JSONL
corpus, through the `bm25s` library) and `python` (code run in r1lab's sandbox).

Each is a plain function with type hints and a docstring, so its schema is derived like a user tool's.
"""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

from r1lab.errors import UserError
from r1lab.tools.calls import ToolResult

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "exp": math.exp,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 1000  # |b| in a ** b; keeps 9 ** 9 ** 9 from running for minutes
MAX_DIGITS = 1000  # an integer result longer than this is refused


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, and sqrt, abs, round, min,
    max, log, exp, pi, e.

    Args:
        expression: the expression, e.g. "(12 + 7) * 3"
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {e.msg}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is too large (at most {MAX_EXPONENT})")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 3.33:
            raise ValueError(f"the result has more than {MAX_DIGITS} digits")
        return value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*[_evaluate(a) for a in node.args])
    what = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
    raise ValueError(
        f"{what!r} is not allowed: only numbers, arithmetic operators and {', '.join(_FUNCTIONS)}"
    )


class Corpus:
    """A BM25 index (bm25s, English stop words, no stemming) over a JSONL file of {id, title, text} rows."""

    def __init__(self, path: str | Path, k: int = 3, snippet_chars: int = 300) -> None:
        import bm25s

        self.path, self.k, self.snippet_chars = Path(path), k, snippet_chars
        self.docs = _read_corpus(self.path)
        self.retriever = bm25s.BM25()
        tokens = bm25s.tokenize(
            [f"{d['title']}\n{d['text']}" for d in self.docs], stopwords="en", show_progress=False
        )
        self.retriever.index(tokens, show_progress=False)

    def search(self, query: str) -> str:
        """Search the document collection; returns the best matches' titles and the start of their text.

        Args:
            query: the words to look for
        """
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return "no results (the query has no searchable words)"
        k = min(self.k, len(self.docs))
        indices, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        lines = []
        for rank, (i, score) in enumerate(zip(indices[0], scores[0], strict=True), 1):
            if score <= 0:
                break
            doc = self.docs[int(i)]
            text = (
                doc["text"]
                if len(doc["text"]) <= self.snippet_chars
                else doc["text"][: self.snippet_chars] + "…"
            )
            lines.append(f"[{rank}] {doc['title']} (id {doc['id']})\n{text}")
        return "\n\n".join(lines) if lines else "no results"


def _read_corpus(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserError(
            f"search corpus {path} does not exist", fix="give a JSONL file of {id, title, text} rows"
        )
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"search corpus: line is not JSON ({e.msg})", where=f"{path}:{n}") from None
        missing = [k for k in ("id", "title", "text") if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserError(f"search corpus row lacks {', '.join(missing)}", where=f"{path}:{n}")
        docs.append({"id": str(row["id"]), "title": str(row["title"]), "text": str(row["text"])})
    if not docs:
        raise UserError(
            f"search corpus {path} has no rows", fix="give a JSONL file of {id, title, text} rows"
        )
    return docs


def _python_signature(code: str) -> ToolResult:
    """Run a Python program in a fresh sandbox and return what it printed (stdout, then stderr).

    Args:
        code: the whole program; print what you want to see
    """
    raise NotImplementedError  # the python tool's signature and docstring; make_python_tool makes the tool


def python_schema() -> dict[str, Any]:
    """The `python` tool's function schema (what `build_toolbox(["python"])` gives) without starting the sandbox,
    for demonstrations written where it may not run (the code task's `tools` column)."""
    from r1lab.tools.schema import function_schema

    schema = function_schema(_python_signature, "tools.python")
    schema["function"]["name"] = "python"
    return schema


def make_python_tool(limits: Any = None, timeout_s: float = 10) -> Callable[[str], Any]:
    """The `python` tool: runs code in r1lab's sandbox (imported here, when a tool box asks for it; a machine
    that cannot run the sandbox is a UserError now, naming what is missing). Unset `limits` are the sandbox's
    defaults with the tool box's `timeout_s` as the wall time."""
    from dataclasses import replace

    from r1lab.sandbox import SandboxLimits, check_sandbox, run_python

    check_sandbox()
    limits = limits or replace(SandboxLimits(), wall_s=timeout_s)

    def python(code: str) -> ToolResult:
        result = run_python(code, limits=limits)
        parts = [result.stdout.rstrip("\n")] if result.stdout else []
        if result.stderr:
            parts.append(f"[stderr]\n{result.stderr.rstrip()}")
        if result.timed_out:
            parts.append(f"[the program was stopped: it ran past its time limit ({result.killed_reason})]")
        elif result.killed_reason:
            parts.append(f"[the program was stopped: {result.killed_reason}]")
        elif result.exit_code:
            parts.append(f"[exit code {result.exit_code}]")
        if result.truncated:
            parts.append("[output truncated by the sandbox]")
        failed = bool(result.exit_code) or result.killed_reason is not None
        return ToolResult(
            "\n".join(parts) if parts else "(no output)", error=failed, timed_out=result.timed_out
        )

    python.__doc__ = _python_signature.__doc__  # its schema's description and argument text
    return python
