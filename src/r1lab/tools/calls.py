"""The tool-call format and its parser.

A policy calls a tool by writing the Hermes/Qwen format, what Qwen-style chat templates render for `tools=`:

    <tool_call>{"name": "search", "arguments": {"query": "capital of France"}}</tool_call>

Several calls may follow each other in one turn. `parse_tool_calls` never raises: a call whose body is not JSON,
has no string "name", or whose "arguments" is not a JSON object comes back with `error` set, so the tool box can
answer the model with that error as text. Rules worth knowing:

- The body is read with a JSON decoder from the first character after `<tool_call>`, so nested braces and a
  string that itself contains "</tool_call>" are read whole; a ```json fence inside the tags is skipped.
- Tags inside a markdown code fence of the turn still count as calls (the tags are the signal, as in vLLM's
  Hermes parser).
- A last `<tool_call>` with no closing tag counts when its JSON object is complete and only white space follows
  (generation stopped on the stop string "</tool_call>", which engines usually leave out of the text);
  otherwise it is a call with an error ("no closing </tool_call>").
- Missing "arguments" means no arguments ({}).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FENCE = re.compile(r"\s*```[a-zA-Z]*\s*")
_DECODER = json.JSONDecoder()


@dataclass
class ToolCall:
    """One call as the model wrote it. `raw` is the whole tagged text; `error` says why it cannot run."""

    name: str
    arguments: dict[str, Any]
    raw: str
    error: str | None = None
    invalid_json: bool = field(
        default=False, compare=False
    )  # the body was not JSON at all (for the counters)


@dataclass
class ToolResult:
    """What goes back to the model as the tool message's content. `error`: the call failed (the text says why);
    `timed_out`: it was stopped at its time limit (an error too)."""

    content: str
    error: bool = False
    truncated: bool = False
    seconds: float = 0.0
    timed_out: bool = False


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every `<tool_call>...</tool_call>` in `text`, in order; malformed ones with `error` set."""
    calls: list[ToolCall] = []
    pos = 0
    while (start := text.find(OPEN, pos)) != -1:
        body_start = start + len(OPEN)
        call, pos = _parse_one(text, start, body_start)
        calls.append(call)
    return calls


def _parse_one(text: str, start: int, body_start: int) -> tuple[ToolCall, int]:
    i = _skip_fence(text, body_start)
    try:
        value, end = _DECODER.raw_decode(text, i)
    except json.JSONDecodeError as e:
        stop, _ = _end_of_call(text, body_start)
        message = f"the tool call is not valid JSON ({e.msg} at char {e.pos - i})"
        return ToolCall("", {}, text[start:stop], message, True), stop
    after = _skip_fence(text, end)
    rest = text[after:]
    if rest.startswith(CLOSE):
        stop = after + len(CLOSE)
    elif rest.strip() == "":
        stop = len(text)  # generation stopped at the closing tag, which the engine left out
    else:
        stop, closed = _end_of_call(text, end)
        what = "text after the JSON object, before </tool_call>" if closed else "no closing </tool_call>"
        return ToolCall("", {}, text[start:stop], f"the tool call has {what}"), stop
    raw = text[start:stop]
    if not isinstance(value, dict):
        return ToolCall("", {}, raw, f"the tool call must be a JSON object, not {type(value).__name__}"), stop
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return ToolCall("", {}, raw, 'the tool call has no "name" (a string)'), stop
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        message = f'"arguments" of {name!r} must be a JSON object, not {type(arguments).__name__}'
        return ToolCall(name, {}, raw, message), stop
    return ToolCall(name, arguments, raw), stop


def _end_of_call(text: str, i: int) -> tuple[int, bool]:
    """Where a malformed call ends: after its closing tag, else at the next call or the end of the text."""
    close, next_open = text.find(CLOSE, i), text.find(OPEN, i)
    if close != -1 and (next_open == -1 or close < next_open):
        return close + len(CLOSE), True
    return (len(text) if next_open == -1 else next_open), False


def _skip_fence(text: str, i: int) -> int:
    """Skip white space and one ``` fence line (```json) at `i`."""
    match = _FENCE.match(text, i)
    if match and "```" in match.group():
        return match.end()
    while i < len(text) and text[i].isspace():
        i += 1
    return i
