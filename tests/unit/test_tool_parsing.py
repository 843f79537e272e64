"""parse_tool_calls on known texts: good calls, several in a turn, nested JSON, fences, and every malformed kind."""

from __future__ import annotations

from r1lab.tools import ToolCall, parse_tool_calls


def test_one_call_in_prose():
    text = 'Let me look.\n<tool_call>\n{"name": "search", "arguments": {"query": "capital of France"}}\n</tool_call>'
    [call] = parse_tool_calls(text)
    assert call == ToolCall("search", {"query": "capital of France"}, text[text.index("<tool_call>") :], None)


def test_several_calls_in_one_turn_in_order():
    text = (
        '<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call> then '
        '<tool_call>{"name": "b", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "c"}</tool_call>'
    )
    calls = parse_tool_calls(text)
    assert [(c.name, c.arguments, c.error) for c in calls] == [
        ("a", {"x": 1}, None),
        ("b", {}, None),
        ("c", {}, None),
    ]
    assert calls[1].raw == '<tool_call>{"name": "b", "arguments": {}}</tool_call>'


def test_nested_braces_and_a_closing_tag_inside_a_string():
    text = (
        '<tool_call>{"name": "python", "arguments": {"code": "d = {\'a\': {\'b\': 1}}\\nprint(\'</tool_call>\')"}}'
        "</tool_call>"
    )
    [call] = parse_tool_calls(text)
    assert call.error is None
    assert call.arguments == {"code": "d = {'a': {'b': 1}}\nprint('</tool_call>')"}
    assert call.raw == text


def test_calls_inside_code_fences():
    outside = '```\n<tool_call>{"name": "a", "arguments": {"q": "x"}}</tool_call>\n```'
    inside = '<tool_call>\n```json\n{"name": "b", "arguments": {"q": "y"}}\n```\n</tool_call>'
    calls = parse_tool_calls(outside + "\n" + inside)
    assert [(c.name, c.arguments, c.error) for c in calls] == [
        ("a", {"q": "x"}, None),
        ("b", {"q": "y"}, None),
    ]
    assert calls[1].raw == inside


def test_no_calls():
    assert parse_tool_calls("The answer is 42. <tool_response>x</tool_response>") == []


def test_malformed_calls_come_back_with_errors_and_do_not_hide_the_next_call():
    text = (
        "<tool_call>{name: search}</tool_call>"  # not JSON
        '<tool_call>{"arguments": {}}</tool_call>'  # no name
        '<tool_call>{"name": "s", "arguments": "q=1"}</tool_call>'  # arguments not an object
        '<tool_call>["s", {}]</tool_call>'  # not an object
        '<tool_call>{"name": "s"} trailing</tool_call>'  # text after the object
        '<tool_call>{"name": "unclosed", "arguments": {"q": 1}} and more'  # no closing tag, text after
        '<tool_call>{"name": "ok", "arguments": {"q": 2}}</tool_call>'
    )
    calls = parse_tool_calls(text)
    assert [c.name for c in calls] == ["", "", "s", "", "", "", "ok"]
    errors = [c.error for c in calls]
    assert errors[0].startswith("the tool call is not valid JSON") and calls[0].invalid_json
    assert errors[1] == 'the tool call has no "name" (a string)'
    assert errors[2] == "\"arguments\" of 's' must be a JSON object, not str"
    assert errors[3] == "the tool call must be a JSON object, not list"
    assert errors[4] == "the tool call has text after the JSON object, before </tool_call>"
    assert errors[5] == "the tool call has no closing </tool_call>"
    assert calls[5].raw == '<tool_call>{"name": "unclosed", "arguments": {"q": 1}} and more'
    assert errors[6] is None and calls[6].arguments == {"q": 2}
    assert not any(c.invalid_json for c in calls[1:])


def test_a_last_call_cut_at_the_stop_string_still_counts():
    """Engines leave the stop string "</tool_call>" out of the text: a complete object at the end is a call."""
    [call] = parse_tool_calls('Searching.<tool_call>\n{"name": "search", "arguments": {"query": "x"}}\n')
    assert call.error is None and call.arguments == {"query": "x"}
    [cut] = parse_tool_calls('<tool_call>{"name": "search", "argum')
    assert cut.invalid_json and cut.error.startswith("the tool call is not valid JSON")
