"""What the tool-use tasks (lookup, code) share: a tool call written in the tool-call format, and a demonstration's
messages as one text."""

from __future__ import annotations

import json
from typing import Any


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """A call in the tool-call format (r1lab.tools.calls), laid out as the tagged fallback's instructions show."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def flatten(messages: list[dict[str, Any]]) -> str:
    """The turns after the user's as one text: assistant turns as written, each tool result in a
    `<tool_response>` block (what the tagged fallback renders), joined by newlines."""
    parts = []
    for m in messages:
        if m["role"] == "assistant":
            parts.append(m["content"])
        elif m["role"] == "tool":
            parts.append(f"<tool_response>\n{m['content']}\n</tool_response>")
    return "\n".join(parts)
