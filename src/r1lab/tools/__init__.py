"""Tools a policy can call: the `<tool_call>` format and its parser, the tool box that runs calls (errors as text,
timeouts, truncation, counters), the built-ins (python, search, calculator), user tools, and chat rendering."""

from r1lab.tools.box import Tool, ToolBox, ToolStats
from r1lab.tools.build import build_toolbox
from r1lab.tools.calls import ToolCall, ToolResult, parse_tool_calls
from r1lab.tools.render import fallback_messages, render_with_tools, supports_tools
from r1lab.tools.schema import function_schema

__all__ = [
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolResult",
    "ToolStats",
    "build_toolbox",
    "fallback_messages",
    "function_schema",
    "parse_tool_calls",
    "render_with_tools",
    "supports_tools",
]
