"""JSON schemas of tools: derived from a Python function's type hints and docstring, and argument checks.

The derived schema is the OpenAI function-schema dict that `tokenizer.apply_chat_template(tools=...)` takes,
the same one `transformers.utils.get_json_schema` writes for the types both support (tested against it), but a
parameter may go without a docstring line, and a type that has no schema is a UserError naming the parameter.
Supported hints: str, int, float, bool, list[...], dict, Literal[...], Optional[...] / X | None.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from r1lab.errors import UserError

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def function_schema(fn: Callable[..., Any], where: str) -> dict[str, Any]:
    """{"type": "function", "function": {name, description, parameters}} for `fn`."""
    doc = inspect.getdoc(fn) or ""
    summary, arg_docs = _split_docstring(doc)
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:
        raise UserError(f"cannot read the type hints of tool {fn.__name__!r}: {e}", where=where) from e
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name not in hints:
            raise UserError(
                f"tool {fn.__name__!r}: parameter {name!r} has no type hint, so its schema cannot be derived",
                where=where,
                fix=f"annotate it (e.g. `{name}: str`) or give the tool an explicit JSON schema",
            )
        prop = _type_schema(hints[name], fn.__name__, name, where)
        if name in arg_docs:
            prop["description"] = arg_docs[name]
        properties[name] = prop
        if param.default is param.empty:
            required.append(name)
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return {
        "type": "function",
        "function": {"name": fn.__name__, "description": summary, "parameters": parameters},
    }


def _type_schema(hint: Any, tool: str, param: str, where: str) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if origin is Literal and args and len({type(a) for a in args}) == 1 and type(args[0]) in _SIMPLE:
        return {"type": _SIMPLE[type(args[0])], "enum": list(args)}
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _type_schema(args[0], tool, param, where)}
    if origin is dict:
        return {"type": "object"}
    if origin in (Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner = next(a for a in args if a is not type(None))
        return {**_type_schema(inner, tool, param, where), "nullable": True}
    raise UserError(
        f"tool {tool!r}: parameter {param!r} has type {hint!r}, which has no JSON schema",
        where=where,
        fix="use str, int, float, bool, list[...], dict, Literal[...] or Optional[...], "
        "or give the tool an explicit JSON schema",
    )


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before Args:) and each argument's line of a Google-style docstring."""
    parts = re.split(r"^\s*(?:Args|Arguments):\s*$", doc, maxsplit=1, flags=re.MULTILINE)
    summary = parts[0].strip()
    args: dict[str, str] = {}
    if len(parts) == 2:
        block = re.split(r"^\s*(?:Returns|Raises|Yields|Examples?):\s*$", parts[1], flags=re.MULTILINE)[0]
        current = None
        for line in block.splitlines():
            match = re.match(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if match:
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return summary, args


def check_arguments(arguments: dict[str, Any], parameters: dict[str, Any]) -> str | None:
    """Why `arguments` do not fit the parameters schema (None when they do): required and unknown keys,
    types, enums and array items; other JSON-schema keywords of an explicit schema are not checked."""
    properties = parameters.get("properties", {})
    missing = [k for k in parameters.get("required", []) if k not in arguments]
    if missing:
        return f"missing required argument(s): {', '.join(missing)}"
    if parameters.get("additionalProperties", False) is False:
        unknown = [k for k in arguments if k not in properties]
        if unknown:
            return f"unknown argument(s): {', '.join(unknown)}; expected: {', '.join(properties) or 'none'}"
    for key, value in arguments.items():
        if key in properties and (problem := _check_value(value, properties[key])):
            return f"argument {key!r}: {problem}"
    return None


def _check_value(value: Any, schema: dict[str, Any]) -> str | None:
    if value is None and schema.get("nullable"):
        return None
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds and not any(_is(value, kind) for kind in kinds):
        return f"expected {' or '.join(kinds)}, got {type(value).__name__} {value!r:.60}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} is not one of {schema['enum']}"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            if problem := _check_value(item, schema["items"]):
                return f"item {i}: {problem}"
    return None


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES.get(kind, (object,)))
