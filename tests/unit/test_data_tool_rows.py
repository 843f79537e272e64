"""SFT on tool conversations (OpenAI / TRL rows: `tool_calls`, `role: tool`, a `tools` column): the text is what
r1lab.tools.render writes for the rollout, the labels are the assistant spans only, bad rows name file:line,
and a few SFT steps on such rows lower the loss."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import pytest
import torch
from test_tools import TOOLS_TEMPLATE  # tests/unit is on the path when pytest runs

from r1lab.config import DataConfig, SFTConfig, validate
from r1lab.data import IGNORE, build_sft_dataset, read_sft_data
from r1lab.data.splits import held_out
from r1lab.data.tool_rows import calls_text
from r1lab.errors import UserError
from r1lab.tools import build_toolbox, render_with_tools

CALC = {
    "name": "calculator",
    "arguments": json.dumps({"expression": "6*7"}),
}  # OpenAI: arguments as JSON text
ROW = [
    {"role": "user", "content": "What is 6 * 7?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": CALC}]},
    {"role": "tool", "tool_call_id": "c1", "name": "calculator", "content": "42"},
    {"role": "assistant", "content": "Answer: 42"},
]
CALL_TEXT = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'
# What the rollout sees: the model's call written in its text (how the multi-turn rollout appends a turn).
AS_WRITTEN = [ROW[0], {"role": "assistant", "content": CALL_TEXT}, *ROW[2:]]

# test_tools' Qwen2.5-style tools template, with Qwen2.5-Instruct's rendering of an assistant's tool_calls added.
QWEN_TOOLS = TOOLS_TEMPLATE.replace(
    "{%- for message in messages %}{%- if message['role'] == 'tool' %}",
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}{%- set tool_call = tool_call.function %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \' }}'
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}",
)
assert QWEN_TOOLS != TOOLS_TEMPLATE


def write_rows(path: Path, rows: list[dict], blank_first: bool = False) -> Path:
    lines = ([""] if blank_first else []) + [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def dataset(path: Path, tokenizer, **data) -> list[dict]:
    return build_sft_dataset(DataConfig(path=str(path), max_length=2048, **data), tokenizer)


def trained_spans(tokenizer, example: dict) -> list[str]:
    """The labelled tokens, decoded run by run."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    return [tokenizer.decode(r, skip_special_tokens=False) for r in runs]


@pytest.mark.parametrize("native", [False, True], ids=["fallback", "tools-template"])
def test_sft_text_is_what_the_rollout_renders_and_labels_are_the_assistant_turns(
    tmp_path, tiny_tokenizer, native
):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    if native:
        tokenizer.chat_template = QWEN_TOOLS
    box = build_toolbox(["calculator"])
    path = write_rows(tmp_path / "tools.jsonl", [{"messages": ROW, "tools": box.schemas()}])
    (example,) = dataset(path, tokenizer)
    text = tokenizer.decode(example["input_ids"], skip_special_tokens=False)
    rollout = render_with_tools(tokenizer, AS_WRITTEN, box, add_generation_prompt=False)
    assert text == rollout
    assert example["input_ids"] == tokenizer(rollout, add_special_tokens=False)["input_ids"]
    assert text == (
        f"<|im_start|>system\n{box.system_prompt_fallback()}<|im_end|>\n"
        "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
        f"<|im_start|>assistant\n{CALL_TEXT}<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nAnswer: 42<|im_end|>\n"
    )
    # hand-checked: the call turn and the answer turn, each through its <|im_end|>; nothing else
    assert trained_spans(tokenizer, example) == [f"{CALL_TEXT}<|im_end|>", "Answer: 42<|im_end|>"]


def test_calls_after_text_and_several_calls_follow_qwens_layout(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = QWEN_TOOLS
    calls = [{"type": "function", "function": {"name": n, "arguments": {"x": i}}} for i, n in enumerate("ab")]
    message = {"role": "assistant", "content": "Two calls.", "tool_calls": calls}
    native = tokenizer.apply_chat_template([message], tokenize=False)
    assert native == f"<|im_start|>assistant\n{calls_text(message)}<|im_end|>\n"
    assert calls_text(message) == (
        'Two calls.\n<tool_call>\n{"name": "a", "arguments": {"x": 0}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"x": 1}}\n</tool_call>'
    )


def test_a_row_without_tools_column_still_renders_tool_turns_as_the_rollout(tmp_path, tiny_tokenizer):
    path = write_rows(tmp_path / "t.jsonl", [{"messages": ROW}, {"messages": ROW[:1] + ROW[3:]}])
    tool_row, plain = dataset(path, tiny_tokenizer)
    text = tiny_tokenizer.decode(tool_row["input_ids"], skip_special_tokens=False)
    assert text.startswith("<|im_start|>user\nWhat is 6 * 7?")  # no schemas: no instructions
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>" in text
    assert tiny_tokenizer.decode(plain["input_ids"]) == (
        "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n<|im_start|>assistant\nAnswer: 42<|im_end|>\n"
    )


@pytest.mark.parametrize(
    ("rows", "what", "where"),
    [
        ([{"messages": [ROW[0], ROW[2], ROW[3]]}], "no tool call before it", "message 2"),
        (
            [{"messages": [ROW[0], {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]}],
            "no function name",
            "message 2, tool_calls[0]",
        ),
        (
            [{"messages": [ROW[0], {"role": "assistant", "tool_calls": [{"function": {**CALC, "arguments": "{x"}}]}]}],
            "are not JSON",
            "message 2, tool_calls[0]",
        ),
        ([{"messages": ROW, "tools": "[{oops"}], "not JSON", "column 'tools'"),
    ],
    ids=["tool-without-call", "call-without-name", "arguments-not-json", "tools-not-json"],
)  # fmt: skip
def test_malformed_tool_rows_name_file_and_line(tmp_path, rows, what, where):
    path = write_rows(tmp_path / "bad.jsonl", [{"messages": ROW}, *rows], blank_first=True)
    with pytest.raises(UserError, match=what) as e:
        read_sft_data(DataConfig(path=str(path)))
    assert e.value.where == f"{path}:3, {where}"  # line 1 blank, line 2 a good row
    assert e.value.fix


def test_a_bad_row_in_the_training_or_held_out_part_names_its_own_line(tmp_path):
    good = {"messages": ROW}
    bad = {"messages": [ROW[0], ROW[2], ROW[3]]}
    path = write_rows(tmp_path / "d.jsonl", [good] * 9 + [bad], blank_first=True)  # the bad row: line 11
    held = set()
    for seed in range(12):  # eval_fraction 0.3 holds the bad row out for some seeds and not for others
        held.add(9 in held_out(10, 0.3, seed))
        with pytest.raises(UserError, match="no tool call before it") as e:
            read_sft_data(DataConfig(path=str(path), eval_fraction=0.3), seed=seed)
        assert e.value.where == f"{path}:11, message 2"
    assert held == {True, False}


def test_sft_steps_on_tool_rows_lower_the_loss(tmp_path, tiny_model_dir):
    from r1lab.stages.sft import run_sft

    tool = {
        "type": "function",
        "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
    }
    rows = []
    for a in range(8):
        call = {"type": "function", "function": {"name": "add", "arguments": json.dumps({"a": a, "b": 7})}}
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} + 7?"},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "content": str(a + 7)},
                    {"role": "assistant", "content": f"Answer: {a + 7}"},
                ],
                "tools": [tool],
            }
        )
    path = write_rows(tmp_path / "tools.jsonl", rows)
    cfg = validate(
        SFTConfig,
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"path": str(path), "max_length": 512, "shuffle": False},
            "optim": {"lr": 1e-2, "warmup_steps": 0, "scheduler": "constant"},
            "train": {"output_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 5},
        },
    )
    torch.set_num_threads(1)
    run_sft(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.5, losses


def test_lookup_records_sft_render_as_the_rollout_with_the_search_schema(tmp_path, tiny_tokenizer):
    pytest.importorskip("bm25s")
    from r1lab.tasks import get_task
    from r1lab.tasks.lookup import write_lookup_corpus

    small = {"people": 120, "companies": 12, "cities": 8, "countries": 3}
    records = get_task("lookup").generate(2, seed=0, **small)
    box = build_toolbox(
        [{"name": "search", "corpus": str(write_lookup_corpus(tmp_path / "c.jsonl", 0, **small))}]
    )
    assert all(r["tools"] == box.schemas() for r in records)
    path = write_rows(
        tmp_path / "lookup.jsonl", [{"messages": r["messages"], "tools": r["tools"]} for r in records]
    )
    for example, record in zip(dataset(path, tiny_tokenizer), records, strict=True):
        text = tiny_tokenizer.decode(example["input_ids"], skip_special_tokens=False)
        assert text == render_with_tools(tiny_tokenizer, record["messages"], box, add_generation_prompt=False)


def test_code_records_carry_the_python_schema_and_sft_render_as_the_rollout(tmp_path, tiny_tokenizer):
    from r1lab.tasks import get_task
    from r1lab.tools import Tool, ToolBox
    from r1lab.tools.builtin import python_schema

    records = get_task("code").generate(2, seed=0)
    assert all(r["tools"] == [python_schema()] for r in records)
    with contextlib.suppress(UserError):  # where the sandbox runs here, the schema is the real tool's
        assert build_toolbox(["python"]).schemas() == [python_schema()]
    box = ToolBox([Tool(lambda code: "", python_schema(), isolated=False)])
    path = write_rows(
        tmp_path / "code.jsonl", [{"messages": r["messages"], "tools": r["tools"]} for r in records]
    )
    for example, record in zip(dataset(path, tiny_tokenizer), records, strict=True):
        text = tiny_tokenizer.decode(example["input_ids"], skip_special_tokens=False)
        assert text == render_with_tools(tiny_tokenizer, record["messages"], box, add_generation_prompt=False)
