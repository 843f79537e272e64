"""Rendering a conversation with tools through a tokenizer's chat template.

A template that supports tools (it reads the `tools` variable, as Qwen2.5's and Llama 3.1's do) gets the
schemas through `apply_chat_template(..., tools=...)` and the tool messages as they are. For a template without
tool support (SmolLM2's), r1lab's plain tagged fallback: the tool instructions (`ToolBox.system_prompt_fallback`,
the Hermes/Qwen text) follow the system message's own text (or are the system message), and each
`{"role": "tool", "content": TEXT}` message becomes a user turn `<tool_response>\\nTEXT\\n</tool_response>`,
consecutive ones one user turn of such blocks joined by newlines: what Qwen2.5's template renders for them. The model's calls stay in the assistant text as it wrote them, `<tool_call>...</tool_call>`.
"""

from __future__ import annotations

from typing import Any

from r1lab.tools.box import ToolBox


def supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template reads the `tools` variable."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates: the "tool_use" one, or the default
        template = template.get("tool_use") or template.get("default") or ""
    return "tools" in str(template)


def fallback_messages(messages: list[dict[str, Any]], toolbox: ToolBox) -> list[dict[str, Any]]:
    """`messages` for a template without tool support (see the module docstring)."""
    instructions = toolbox.system_prompt_fallback()
    out: list[dict[str, Any]] = []
    if not messages or messages[0]["role"] != "system":
        out.append({"role": "system", "content": instructions})
    for i, message in enumerate(messages):
        if i == 0 and message["role"] == "system":
            out.append({"role": "system", "content": f"{message['content']}\n\n{instructions}"})
        elif message["role"] == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            if i > 0 and messages[i - 1]["role"] == "tool":  # consecutive results share one user turn
                out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n{block}"}
            else:
                out.append({"role": "user", "content": block})
        else:
            out.append(message)
    return out


def render_with_tools(
    tokenizer: Any, messages: list[dict[str, Any]], toolbox: ToolBox, add_generation_prompt: bool = True
) -> str:
    """The prompt text of `messages` with `toolbox`'s tools, through the template's tool support or the fallback."""
    if supports_tools(tokenizer):
        return tokenizer.apply_chat_template(
            messages, tools=toolbox.schemas(), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return tokenizer.apply_chat_template(
        fallback_messages(messages, toolbox), tokenize=False, add_generation_prompt=add_generation_prompt
    )
