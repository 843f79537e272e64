"""Tool conversations: their rendering through a chat template (SFT rows and the multi-turn rollout share it) and
the checks of SFT rows in the OpenAI / TRL tool format.

Rendering. A template that reads the `tools` variable (Qwen2.5's, Llama 3.1's) gets the schemas through
`apply_chat_template(..., tools=...)` and the messages as they are. For one without tool support (SmolLM2's), the
plain tagged fallback: the tool instructions (`fallback_instructions`, the Hermes/Qwen text) follow the system
message's own text (or are the system message), each `{"role": "tool", "content": TEXT}` message becomes a user
turn `<tool_response>\\nTEXT\\n</tool_response>` (consecutive ones one user turn of such blocks joined by
newlines), and an assistant message's `tool_calls` are written after its text as `<tool_call>` blocks: what
Qwen2.5's template renders for them. With no schemas there are no instructions. `r1lab.tools.render` is this
module with a ToolBox's schemas (tools sits above data, so the one implementation lives here).

SFT rows. A row is a tool row when a message has role `tool` or `tool_calls`, or the row has a `tools` column
(a list of OpenAI function schemas, or that list as JSON text): it renders as above with its own schemas, and its
labels are the assistant tokens only (the tool results, the system text and the tools preamble are masked).
`check_tool_row` refuses a tool message with no call before it, a call without a name, and arguments that are
not a JSON object, naming where; JSON-text arguments become objects (what templates' `tojson` expects).
"""

from __future__ import annotations

import json
from typing import Any

from r1lab.errors import UserError

_FIX_CALL = 'write each call as {"type": "function", "function": {"name": "...", "arguments": {...}}}'


def supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template reads the `tools` variable."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates: the "tool_use" one, or the default
        template = template.get("tool_use") or template.get("default") or ""
    return "tools" in str(template)


def fallback_instructions(schemas: list[dict[str, Any]]) -> str:
    """The tool instructions for a chat template without tool support: the Hermes/Qwen system text."""
    listed = "\n".join(json.dumps(s, ensure_ascii=False) for s in schemas)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def calls_text(message: dict[str, Any]) -> str:
    """An assistant message's text with its `tool_calls` written after it as Qwen2.5's template does."""
    text = message.get("content") or ""
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call)
        body = json.dumps({"name": fn["name"], "arguments": fn.get("arguments", {})}, ensure_ascii=False)
        text += f"\n<tool_call>\n{body}\n</tool_call>"
    return text if message.get("content") else text.removeprefix("\n")


def fallback_messages(messages: list[dict[str, Any]], schemas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` for a template without tool support (see the module docstring)."""
    instructions = fallback_instructions(schemas) if schemas else ""
    out: list[dict[str, Any]] = []
    if instructions and (not messages or messages[0]["role"] != "system"):
        out.append({"role": "system", "content": instructions})
    for i, message in enumerate(messages):
        if i == 0 and message["role"] == "system" and instructions:
            out.append({"role": "system", "content": f"{message['content']}\n\n{instructions}"})
        elif message["role"] == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            if i > 0 and messages[i - 1]["role"] == "tool":  # consecutive results share one user turn
                out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n{block}"}
            else:
                out.append({"role": "user", "content": block})
        elif message.get("tool_calls"):
            rest = {k: v for k, v in message.items() if k != "tool_calls"}
            out.append(rest | {"content": calls_text(message)})
        else:
            out.append(message)
    return out


def render_tool_conversation(
    tokenizer: Any, messages: list[dict[str, Any]], schemas: list[dict[str, Any]], generation_prompt: bool
) -> str:
    """The text of `messages` with the tools `schemas`, through the template's tool support or the fallback."""
    if supports_tools(tokenizer):
        return tokenizer.apply_chat_template(
            messages, tools=schemas or None, tokenize=False, add_generation_prompt=generation_prompt
        )
    return tokenizer.apply_chat_template(
        fallback_messages(messages, schemas), tokenize=False, add_generation_prompt=generation_prompt
    )


def is_tool_row(messages: list[dict[str, Any]], columns: dict[str, Any]) -> bool:
    return columns.get("tools") is not None or any(
        m["role"] == "tool" or m.get("tool_calls") for m in messages
    )


def check_tool_row(
    messages: list[dict[str, Any]], tools: Any, where: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The row's messages (calls' JSON-text arguments read into objects) and its tool schemas; UserError naming
    `where` and the message for a malformed row (see the module docstring)."""
    schemas = _schemas(tools, where)
    out: list[dict[str, Any]] = []
    called = False
    for i, m in enumerate(messages):
        here = f"{where}, message {i + 1}".removeprefix(", ")
        if m["role"] == "tool":
            if not called:
                raise UserError(
                    "a tool message has no tool call before it",
                    where=here,
                    fix="put the assistant message that calls the tool (tool_calls, or a <tool_call> in its "
                    "text) before its result, or drop the tool message",
                )
        elif m["role"] == "assistant":
            called = bool(m.get("tool_calls")) or "<tool_call>" in (m.get("content") or "")
            if m.get("tool_calls") is not None:
                m = m | {"tool_calls": [_call(c, f"{here}, tool_calls[{k}]") for k, c in _list(m, here)]}
        elif m["role"] == "user":
            called = False
        out.append(m)
    return out, schemas


def _list(message: dict[str, Any], where: str) -> list[tuple[int, Any]]:
    calls = message["tool_calls"]
    if not isinstance(calls, list):
        raise UserError(f"tool_calls must be a list, got {type(calls).__name__}", where=where, fix=_FIX_CALL)
    return list(enumerate(calls))


def _call(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise UserError(f"a tool call has no function name: {call!r:.80}", where=where, fix=_FIX_CALL)
    arguments = fn.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise UserError(
                f"the arguments of tool call {fn['name']!r} are not JSON ({e.msg}): {arguments!r:.80}",
                where=where,
                fix='write arguments as a JSON object, e.g. {"query": "..."} (or its JSON text)',
            ) from None
    if not isinstance(arguments, dict):
        raise UserError(
            f"the arguments of tool call {fn['name']!r} must be a JSON object, got {type(arguments).__name__}",
            where=where,
            fix='write arguments as a JSON object, e.g. {"query": "..."}',
        )
    function = {k: v for k, v in fn.items() if k != "arguments"} | {"arguments": arguments}
    return (
        {**call, "function": function} if "function" in call else {"type": "function", "function": function}
    )


def _schemas(tools: Any, where: str) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise UserError(
                f"the tools column is text that is not JSON ({e.msg})",
                where=f"{where}, column 'tools'",
                fix="store the tools as a list of function schemas (or that list as JSON text)",
            ) from None
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("function", t).get("name"), str) for t in tools
    ):
        raise UserError(
            f"the tools column must be a list of function schemas, got {tools!r:.80}",
            where=f"{where}, column 'tools'",
            fix='e.g. [{"type": "function", "function": {"name": "search", "parameters": {...}}}]',
        )
    return tools


def prepare_tool_row(conv: Any, source: str, number: int) -> None:
    """Check a normalised SFT Conversation in place when it is a tool row (its messages get objects for JSON-text
    arguments, its `tools` column the parsed schemas). `number`: its record number in `source` (1-based, for the
    error's file:line)."""
    if not is_tool_row(conv.messages, conv.columns):
        return
    try:
        conv.messages, conv.columns["tools"] = check_tool_row(conv.messages, conv.columns.get("tools"), "")
    except UserError as e:
        place = jsonl_where(source, number)
        raise UserError(e.what, where=f"{place}, {(e.where or '').removeprefix(', ')}", fix=e.fix) from None


def tool_schemas(conv: Any) -> list[dict[str, Any]] | None:
    """The schemas a tool row renders with ([] when it has none), or None for a plain row."""
    return (conv.columns.get("tools") or []) if is_tool_row(conv.messages, conv.columns) else None


def jsonl_where(source: str, number: int) -> str:
    """'file:line' of record `number` (1-based) of a local JSONL file (blank lines skipped, as the reader
    does), else 'source, record N'."""
    from pathlib import Path

    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            lines = [n for n, line in enumerate(f, start=1) if line.strip()]
        if number <= len(lines):
            return f"{path}:{lines[number - 1]}"
    return f"{source}, record {number}"
