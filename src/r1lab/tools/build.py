"""`build_toolbox`: a ToolBox from specs, each a built-in name, a user tool `module.path:function` (or
`path/to/file.py:function`), or a dict.

A dict spec names one of those in "name" and adds options: for `search` "corpus" (a JSONL of {id, title, text})
and "k" (results per query, default 3); for `sql` "table" (a JSONL of flat records) and "table_name" (its SQL
name, default the file's stem); for a user tool "parameters" (an explicit JSON schema of the arguments,
used instead of the derived one) and "description". Every problem is a UserError before anything runs.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from r1lab.errors import UserError
from r1lab.tools.box import Tool, ToolBox
from r1lab.tools.builtin import Corpus, calculator, make_python_tool
from r1lab.tools.schema import function_schema
from r1lab.tools.table import table_tool

BUILTINS = ("calculator", "python", "search", "sql")
_OPTIONS = {"calculator": set(), "python": set(), "search": {"corpus", "k"}, "sql": {"table", "table_name"}}


def build_toolbox(
    specs: list[str | dict[str, Any]],
    *,
    corpus: str | Path | None = None,
    sandbox_limits: Any = None,
    timeout_s: float = 10,
    max_output_chars: int = 4000,
    where: str = "tools",
) -> ToolBox:
    """`corpus`: the `search` tool's JSONL when its spec gives none; `sandbox_limits`: the python tool's
    `r1lab.sandbox.SandboxLimits` (None: the sandbox's defaults, with `timeout_s` as the wall time); `timeout_s`:
    each call's time limit; `where`: the config key, for errors."""
    tools = []
    for i, spec in enumerate(specs):
        here = f"{where}[{i}]"
        options = dict(spec) if isinstance(spec, dict) else {"name": spec}
        name = options.pop("name", None)
        if not isinstance(name, str) or not name.strip():
            raise UserError(
                f"tool spec {spec!r} has no name", where=here, fix=f"one of {BUILTINS} or module:function"
            )
        tools.append(_build_one(name.strip(), options, here, corpus, sandbox_limits, timeout_s))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise UserError(f"two tools have the same name: {names}", where=where, fix="list each tool once")
    return ToolBox(tools, timeout_s=timeout_s, max_output_chars=max_output_chars)


def _build_one(
    name: str, options: dict[str, Any], where: str, corpus: Any, limits: Any, timeout_s: float
) -> Tool:
    if ":" not in name:
        if name not in BUILTINS:
            raise UserError(
                f"unknown tool {name!r}",
                where=where,
                fix=f"one of {', '.join(BUILTINS)}, or module.path:function",
            )
        unknown = set(options) - _OPTIONS[name]
        if unknown:
            raise UserError(f"tool {name!r} takes no option(s) {sorted(unknown)}", where=where)
        if name == "sql":  # read-only SQL over one table (r1lab.tools.table)
            if "table" not in options:
                raise UserError(
                    "the sql tool needs a table", where=where, fix='{"name": "sql", "table": FILE}'
                )
            return table_tool(options["table"], options.get("table_name"), where)
        if name == "calculator":
            fn: Any = calculator
        elif name == "python":
            fn = _python_tool(limits, timeout_s, where)
        else:
            path = options.get("corpus", corpus)
            if path is None:
                raise UserError(
                    "the search tool needs a corpus", where=where, fix='{"name": "search", "corpus": FILE}'
                )
            k = options.get("k", 3)
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise UserError(f"search: k must be a positive integer, got {k!r}", where=f"{where}.k")
            fn = _search_tool(path, k, where)
        return Tool(fn, function_schema(fn, where), isolated=False)
    unknown = set(options) - {"parameters", "description"}
    if unknown:
        raise UserError(
            f"user tool {name!r} takes no option(s) {sorted(unknown)}",
            where=where,
            fix="a user tool's dict takes parameters (a JSON schema) and description",
        )
    fn = load_function(name, where)
    if "parameters" in options:
        parameters = options["parameters"]
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise UserError(f"tool {name!r}: parameters must be a JSON schema with type: object", where=where)
        description = options.get("description", (fn.__doc__ or "").strip().split("\n\n")[0])
        schema = {
            "type": "function",
            "function": {"name": fn.__name__, "description": description, "parameters": parameters},
        }
    else:
        schema = function_schema(fn, where)
        if "description" in options:
            schema["function"]["description"] = options["description"]
    return Tool(fn, schema, isolated=True)


def _search_tool(path: Any, k: int, where: str) -> Any:
    try:
        import bm25s  # noqa: F401
    except ImportError:
        raise UserError(
            "the search tool needs bm25s", where=where, fix="pip install 'r1lab[tools]'"
        ) from None
    return Corpus(path, k=k).search


def _python_tool(limits: Any, timeout_s: float, where: str) -> Any:
    try:
        return make_python_tool(limits, timeout_s)
    except ImportError as e:
        raise UserError(
            f"the python tool needs r1lab.sandbox, which cannot be imported: {e}", where=where
        ) from e
    except UserError as e:  # the sandbox cannot start here: say so at start, naming the tool
        raise UserError(f"the python tool cannot run: {e.what}", where=where, fix=e.fix) from e


def load_function(name: str, where: str) -> Any:
    """`package.module:function` or `path/to/file.py:function`."""
    target, _, attr = name.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            spec = importlib.util.spec_from_file_location(f"r1lab_user_tool_{path.stem}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as e:
        raise UserError(
            f"cannot import tool {name!r}: {type(e).__name__}: {e}",
            where=where,
            fix="module.path:function (importable) or path/to/file.py:function",
        ) from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{target} has no function {attr!r}", where=where)
    return fn
