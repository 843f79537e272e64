"""Rendering a conversation with a tool box's tools through a tokenizer's chat template.

The one implementation is r1lab.data.tool_rows (SFT on tool conversations renders through it too, and data sits
below tools): a template that reads `tools` gets the schemas through `apply_chat_template(..., tools=...)`; for
one without tool support (SmolLM2's), r1lab's plain tagged fallback: the tool instructions
(`ToolBox.system_prompt_fallback`, the Hermes/Qwen text) follow the system message's own text (or are the system
message), and each `{"role": "tool", "content": TEXT}` message becomes a user turn
`<tool_response>\\nTEXT\\n</tool_response>`, consecutive ones one user turn of such blocks joined by newlines: what
Qwen2.5's template renders for them. The model's calls stay in the assistant text as it wrote them,
`<tool_call>...</tool_call>` (an assistant message's `tool_calls` are written that way after its text).
"""

from __future__ import annotations

from typing import Any

from r1lab.tools.box import ToolBox

# r1lab.data.tool_rows is imported when called: the r1lab.data package imports torch, r1lab.tools need not.


def supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template reads the `tools` variable."""
    from r1lab.data.tool_rows import supports_tools as reads_tools

    return reads_tools(tokenizer)


def fallback_messages(messages: list[dict[str, Any]], toolbox: ToolBox) -> list[dict[str, Any]]:
    """`messages` for a template without tool support (see the module docstring)."""
    from r1lab.data.tool_rows import fallback_messages as fallback

    return fallback(messages, toolbox.schemas())


def render_with_tools(
    tokenizer: Any, messages: list[dict[str, Any]], toolbox: ToolBox, add_generation_prompt: bool = True
) -> str:
    """The prompt text of `messages` with `toolbox`'s tools, through the template's tool support or the fallback."""
    from r1lab.data.tool_rows import render_tool_conversation

    return render_tool_conversation(tokenizer, messages, toolbox.schemas(), add_generation_prompt)
