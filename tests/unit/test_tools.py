"""The tool box on known cases: derived schemas, the built-ins, errors as text, timeouts, truncation, rendering."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Literal, Optional

import pytest
from transformers.utils import get_json_schema

from r1lab.errors import UserError
from r1lab.tools import (
    Tool,
    ToolBox,
    ToolCall,
    build_toolbox,
    function_schema,
    parse_tool_calls,
    render_with_tools,
)
from r1lab.tools.builtin import calculator


def lookup(city: str, year: int, unit: Literal["c", "f"] = "c", tags: Optional[list[str]] = None) -> str:  # noqa: UP045
    """Look up a city's mean temperature.

    Args:
        city: the city's name
        year: the year, e.g. 2020
        unit: degrees Celsius or Fahrenheit
        tags: extra labels
    """
    return f"{city} {year} {unit} {tags}"


def scale(
    x: float, flag: bool = False, weights: list[float] | None = None, extra: dict | None = None
) -> float:
    """Scale a number.

    Args:
        x: the number
        flag: whether to double it
    """
    return x * (2 if flag else 1)


def boom(text: str) -> str:
    """Always fails.

    Args:
        text: anything
    """
    raise ValueError(f"boom on {text}")


def hang(seconds: float) -> str:
    """Sleeps.

    Args:
        seconds: how long
    """
    time.sleep(seconds)
    return "woke up"


def die(code: int) -> str:
    """Ends its process.

    Args:
        code: the exit code
    """
    os._exit(code)


def big(n: int) -> str:
    """Returns n characters.

    Args:
        n: how many
    """
    return "x" * n


def call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(name, dict(arguments), raw="")


def test_derived_schema_is_the_exact_dict_and_matches_transformers():
    expected = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look up a city's mean temperature.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city's name"},
                    "year": {"type": "integer", "description": "the year, e.g. 2020"},
                    "unit": {
                        "type": "string",
                        "enum": ["c", "f"],
                        "description": "degrees Celsius or Fahrenheit",
                    },
                    "tags": {
                        "type": "array",
                        "items": {"type": "string"},
                        "nullable": True,
                        "description": "extra labels",
                    },
                },
                "required": ["city", "year"],
            },
        },
    }
    assert function_schema(lookup, "t") == expected
    reference = get_json_schema(lookup)
    reference["function"].pop("return")
    assert function_schema(lookup, "t") == reference
    # undocumented parameters are allowed (no description); float, bool, list[float] | None, dict | None
    assert function_schema(scale, "t")["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "x": {"type": "number", "description": "the number"},
            "flag": {"type": "boolean", "description": "whether to double it"},
            "weights": {"type": "array", "items": {"type": "number"}, "nullable": True},
            "extra": {"type": "object", "nullable": True},
        },
        "required": ["x"],
    }


def test_a_schema_that_cannot_be_derived_names_the_parameter():
    def no_hint(a: int, b) -> str:
        return ""

    def odd_type(where: Path) -> str:
        return ""

    with pytest.raises(UserError, match=r"parameter 'b' has no type hint") as e:
        function_schema(no_hint, "tools[0]")
    assert "tools[0]" in str(e.value)
    with pytest.raises(UserError, match=r"parameter 'where' has type .*Path.*which has no JSON schema"):
        function_schema(odd_type, "tools[1]")


@pytest.mark.parametrize(
    ("expression", "value"),
    [("(12 + 7) * 3", "57"), ("2 ** 10 - 1", "1023"), ("7 / 2", "3.5"), ("sqrt(16) + abs(-2)", "6"),
     ("-3 % 5", "2"), ("17 // 5", "3"), ("round(2 * pi, 2)", "6.28"), ("max(3, 9, 4) - min(1, 2)", "8")],
)  # fmt: skip
def test_calculator_on_known_expressions(expression, value):
    assert calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("__import__('os').system('echo hi')", "is not allowed"),
        ("(1).__class__", "is not allowed"),
        ("().__class__.__bases__[0]", "is not allowed"),
        ("import os", "not an arithmetic expression"),
        ("open('/etc/passwd')", "is not allowed"),
        ("x + 1", "is not allowed"),
        ("9 ** 9 ** 9", "exponent 387420489 is too large"),
        ("'a' * 3", "is not allowed"),
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression, why):
    box = build_toolbox(["calculator"])
    result = box.run(call("calculator", expression=expression))
    assert result.error and why in result.content and result.content.startswith("Error: calculator failed: ")
    assert box.stats.errors == 1 and box.stats.calls == 1


def test_bm25_search_ranks_the_right_document_first(tmp_path):
    docs = [
        {
            "id": "v1",
            "title": "Eyjafjallajökull",
            "text": "A volcano in Iceland whose 2010 eruption stopped flights.",
        },
        {"id": "r1", "title": "Danube", "text": "A river that flows through Vienna, Budapest and Belgrade."},
        {"id": "c1", "title": "Sourdough", "text": "Bread leavened by wild yeast and lactic acid bacteria."},
        {
            "id": "r2",
            "title": "Rhine",
            "text": "A river from the Swiss Alps to the North Sea, through Basel.",
        },
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    box = build_toolbox([{"name": "search", "corpus": str(corpus), "k": 2}])
    result = box.run(call("search", query="which volcano erupted in Iceland?"))
    assert not result.error
    assert result.content.startswith("[1] Eyjafjallajökull (id v1)\nA volcano in Iceland")
    assert "[2]" not in result.content  # no other document shares a word with the query
    rivers = box.run(call("search", query="river through Basel")).content
    assert rivers.startswith("[1] Rhine (id r2)") and "[2] Danube (id r1)" in rivers
    assert box.run(call("search", query="the of")).content == "no results (the query has no searchable words)"


def test_a_bad_corpus_is_a_user_error_naming_the_line(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": 1, "title": "a", "text": "b"}\n{"id": 2, "text": "no title"}\n')
    with pytest.raises(UserError, match="lacks title") as e:
        build_toolbox(["search"], corpus=corpus)
    assert f"{corpus}:2" in str(e.value)
    with pytest.raises(UserError, match="needs a corpus"):
        build_toolbox(["search"])
    with pytest.raises(UserError, match="k must be a positive integer, got 0") as e:
        build_toolbox([{"name": "search", "corpus": str(corpus), "k": 0}])
    assert "tools[0].k" in str(e.value)


def test_a_raising_tool_and_a_dying_tool_return_errors_and_the_box_goes_on():
    with ToolBox([Tool(boom, function_schema(boom, "t")), Tool(die, function_schema(die, "t"))]) as box:
        result = box.run(call("boom", text="hi"))
        assert result.error and result.content == "Error: boom failed: ValueError: boom on hi"
        died = box.run(call("die", code=3))
        assert died.error and "the tool's process died (exit code 3)" in died.content
        assert box.run(call("boom", text="again")).content == "Error: boom failed: ValueError: boom on again"
        assert (box.stats.calls, box.stats.errors, box.stats.timeouts) == (3, 3, 0)


def test_a_hanging_tool_is_killed_at_its_timeout_and_the_next_call_runs():
    with ToolBox([Tool(hang, function_schema(hang, "t"))], timeout_s=0.5) as box:
        result = box.run(call("hang", seconds=60))
        assert result.error and result.content == "Error: hang did not finish within 0.5 s and was stopped"
        assert result.seconds < 30  # killed, not waited out (a bound, not a timing: the tool sleeps 60 s)
        assert box.run(call("hang", seconds=0)).content == "woke up"
        assert (box.stats.timeouts, box.stats.errors, box.stats.calls) == (1, 1, 2)


def test_huge_output_is_truncated_and_counted():
    with ToolBox([Tool(big, function_schema(big, "t"))], max_output_chars=100) as box:
        result = box.run(call("big", n=5000))
        assert result.truncated and not result.error
        assert result.content == "x" * 100 + "\n[truncated: 4900 more characters]"
        assert not box.run(call("big", n=100)).truncated
        assert box.stats.truncated == 1


def test_unknown_tools_bad_json_and_bad_arguments_are_errors_counted_by_kind():
    box = build_toolbox(["calculator"])
    text = (
        '<tool_call>{"name": "weather", "arguments": {}}</tool_call>'
        "<tool_call>{not json}</tool_call>"
        '<tool_call>{"name": "calculator", "arguments": {"expression": 12}}</tool_call>'
        '<tool_call>{"name": "calculator", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1", "mode": "x"}}</tool_call>'
        '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
    )
    results = [box.run(c) for c in parse_tool_calls(text)]
    assert results[0].content == "Error: unknown tool 'weather'; the tools are: calculator"
    assert results[1].content.startswith("Error: the tool call is not valid JSON")
    assert results[2].content == "Error: calculator: argument 'expression': expected string, got int 12"
    assert results[3].content == "Error: calculator: missing required argument(s): expression"
    assert results[4].content == "Error: calculator: unknown argument(s): mode; expected: expression"
    assert results[5].content == "2" and not results[5].error
    metrics = box.stats.as_metrics()
    counts = {
        k: metrics[f"tools/{k}"] for k in ("calls", "errors", "unknown", "invalid_json", "bad_arguments")
    }
    assert counts == {"calls": 6, "errors": 5, "unknown": 1, "invalid_json": 1, "bad_arguments": 3}


def test_build_toolbox_user_tools_from_a_file_and_with_an_explicit_schema(tmp_path):
    module = tmp_path / "mytools.py"
    module.write_text(
        "def add(a: int, b: int) -> int:\n"
        '    """Add two integers.\n\n    Args:\n        a: first\n        b: second\n    """\n'
        "    return a + b\n\n"
        "def echo(**kwargs):\n    return kwargs\n"
    )
    schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
    box = build_toolbox(
        [f"{module}:add", {"name": f"{module}:echo", "parameters": schema, "description": "Echo a word."}]
    )
    try:
        assert [s["function"]["name"] for s in box.schemas()] == ["add", "echo"]
        assert box.schemas()[1]["function"] == {
            "name": "echo",
            "description": "Echo a word.",
            "parameters": schema,
        }
        assert box.run(call("add", a=2, b=40)).content == "42"
        assert box.run(call("echo", word="hi")).content == '{"word": "hi"}'
        assert box.run(call("echo")).content == "Error: echo: missing required argument(s): word"
    finally:
        box.close()
    with pytest.raises(UserError, match="unknown tool 'shell'"):
        build_toolbox(["calculator", "shell"])
    with pytest.raises(UserError, match="cannot import tool") as e:
        build_toolbox([f"{tmp_path}/missing.py:add"])
    assert "tools[0]" in str(e.value)
    with pytest.raises(UserError, match="same name"):
        build_toolbox(["calculator", "calculator"])


# A Qwen2.5-style template with tool support: its tools block, and tool messages as <tool_response> blocks,
# consecutive ones in one user turn (Qwen2.5-Instruct's template, less its tool_calls and default system text).
TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, '
    '\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif not (loop.first and message['role'] == 'system' and tools) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_rendering_with_a_tools_template_and_with_the_fallback_give_the_same_prompt(tiny_tokenizer):
    box = build_toolbox(["calculator"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 6 * 7?"},
        {"role": "assistant", "content": '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n'
                                         "</tool_call>"},
        {"role": "tool", "name": "calculator", "content": "42"},
        {"role": "tool", "name": "calculator", "content": "43"},
        {"role": "assistant", "content": "42"},
        {"role": "tool", "name": "calculator", "content": "44"},
    ]  # fmt: skip
    with_tools = copy.deepcopy(tiny_tokenizer)
    with_tools.chat_template = TOOLS_TEMPLATE
    native = render_with_tools(with_tools, messages, box)
    fallback = render_with_tools(tiny_tokenizer, messages, box)  # tests/tiny.py's plain ChatML: no tools
    schema = json.dumps(box.schemas()[0], ensure_ascii=False)
    assert native == (
        f"<|im_start|>system\nBe brief.\n\n{box.system_prompt_fallback()}<|im_end|>\n"
        "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
        f"<|im_start|>assistant\n{messages[2]['content']}<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\n43\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n42<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n44\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert f"<tools>\n{schema}\n</tools>" in native
    assert fallback == native
    # no system message: the fallback makes one holding the instructions alone
    short = render_with_tools(tiny_tokenizer, messages[1:2], box, add_generation_prompt=False)
    assert short == (
        f"<|im_start|>system\n{box.system_prompt_fallback()}<|im_end|>\n<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
    )


def sandbox_problem() -> str | None:
    """Why the python tool cannot run here (no r1lab.sandbox yet, or a machine without bubblewrap), else None."""
    if importlib.util.find_spec("r1lab.sandbox") is None:
        return "r1lab.sandbox is not there"
    from r1lab.sandbox import check_sandbox

    try:
        check_sandbox()
    except UserError as e:
        return f"the sandbox cannot run here: {e.what}"
    return None


@pytest.mark.skipif(sandbox_problem() is not None, reason=str(sandbox_problem()))
def test_python_tool_runs_code_in_the_sandbox_and_is_stopped_at_its_timeout():
    box = build_toolbox(["python"], timeout_s=30)  # a loaded machine once took 2 s to start one
    ok = box.run(call("python", code="print(sum(range(10)))"))
    assert (ok.content, ok.error) == ("45", False)
    failed = box.run(call("python", code="print('partial')\nraise SystemExit(3)"))
    assert (failed.content, failed.error) == ("partial\n[exit code 3]", True)
    assert (box.stats.calls, box.stats.errors, box.stats.timeouts) == (2, 1, 0)
    short = build_toolbox(["python"], timeout_s=1)
    hung = short.run(call("python", code="while True:\n    pass"))
    assert hung.error and hung.timed_out and "ran past its time limit" in hung.content
    assert (short.stats.calls, short.stats.errors, short.stats.timeouts) == (1, 1, 1)


@pytest.mark.skipif(importlib.util.find_spec("r1lab.sandbox") is None, reason="r1lab.sandbox is not there")
def test_a_machine_without_bubblewrap_is_an_error_at_start_naming_it(monkeypatch):
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k)
    )
    from r1lab.sandbox import check_sandbox

    clear = getattr(check_sandbox, "cache_clear", lambda: None)  # it remembers a machine that could run it
    clear()
    try:
        with pytest.raises(
            UserError, match=r"the python tool cannot run: bubblewrap \(bwrap\) not found"
        ) as e:
            build_toolbox(["calculator", "python"])
    finally:
        clear()
    assert "tools[1]" in str(e.value) and "apt-get install bubblewrap" in str(e.value)
