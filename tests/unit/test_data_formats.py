"""Format detection, column mapping and normalisation into conversations."""

from __future__ import annotations

import json

import pytest

from r1lab.config import DataConfig
from r1lab.data import Conversation, Preference, normalise, resolve_schema
from r1lab.errors import UserError


def cfg(**kw) -> DataConfig:
    return DataConfig(path="x.jsonl", **kw)


@pytest.mark.parametrize(
    ("columns", "fmt"),
    [
        ({"messages", "id"}, "messages"),
        ({"conversations"}, "messages"),
        ({"prompt", "chosen", "rejected"}, "preference"),
        ({"prompt", "completion", "answer"}, "prompt_completion"),
        ({"prompt", "answer"}, "prompt"),
    ],
)
def test_detects_format(columns, fmt):
    assert resolve_schema(columns, cfg(), "x.jsonl").format == fmt


def test_unknown_shape_lists_found_and_expected_columns():
    with pytest.raises(UserError, match=r"found columns answer, question") as e:
        resolve_schema({"question", "answer"}, cfg(), "x.jsonl")
    assert "prompt" in e.value.fix and "data.columns" in e.value.fix


def test_explicit_format_missing_column():
    with pytest.raises(UserError, match=r"needs the column\(s\) prompt, completion; missing: completion"):
        resolve_schema({"prompt", "answer"}, cfg(format="prompt_completion"), "x.jsonl")


def test_mapping_to_absent_column_lists_found():
    with pytest.raises(UserError, match=r"not in the data \(prompt: question\); found columns: answer, q"):
        resolve_schema({"q", "answer"}, cfg(columns={"prompt": "question"}), "x.jsonl")


def test_mapping_renames_structural_and_other_columns():
    c = cfg(columns={"prompt": "question", "completion": "solution", "answer": "gold"})
    schema = resolve_schema({"question", "solution", "gold", "id"}, c, "x.jsonl")
    conv = normalise({"question": "1+1?", "solution": "2", "gold": "2", "id": 7}, schema, c, "r1")
    assert isinstance(conv, Conversation)
    assert conv.messages == [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    assert conv.first_target == 1
    assert conv.columns == {"answer": "2", "id": 7}


def test_sharegpt_messages_and_system_prompt():
    c = cfg(system_prompt="Be brief.")
    schema = resolve_schema({"conversations"}, c, "x")
    rec = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    conv = normalise(rec, schema, c, "r1")
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant"]
    assert conv.messages[0]["content"] == "Be brief." and conv.first_target == 0
    rec = {"conversations": [{"role": "system", "content": "Own."}, {"role": "user", "content": "hi"}]}
    assert normalise(rec, schema, c, "r1").messages[0]["content"] == "Own."  # an existing system turn wins


def test_messages_as_json_string_from_csv_and_bad_messages():
    c = cfg()
    schema = resolve_schema({"messages"}, c, "x")
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert normalise({"messages": json.dumps(msgs)}, schema, c, "r1").messages == msgs
    with pytest.raises(UserError, match="plain string") as e:
        normalise({"messages": "hello"}, schema, c, "x.jsonl, record 3")
    assert e.value.where.startswith("x.jsonl, record 3")
    with pytest.raises(UserError, match="has no role"):
        normalise({"messages": [{"content": "b"}]}, schema, c, "r1")


def test_prompt_completion_with_message_lists_keeps_few_shot_turns_untrained():
    c = cfg()
    schema = resolve_schema({"prompt", "completion"}, c, "x")
    prompt = [
        {"role": "user", "content": "1+1"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+2"},
    ]
    conv = normalise(
        {"prompt": prompt, "completion": [{"role": "assistant", "content": "4"}]}, schema, c, "r"
    )
    assert conv.first_target == 3 and conv.has_target()
    assert not normalise({"prompt": "q", "completion": None}, schema, c, "r").has_target()


def test_preference_pairs():
    c = cfg(system_prompt="S")
    schema = resolve_schema({"prompt", "chosen", "rejected", "id"}, c, "x")
    pref = normalise({"prompt": "q", "chosen": "good", "rejected": "bad", "id": 1}, schema, c, "r")
    assert isinstance(pref, Preference)
    assert pref.prompt == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]
    assert pref.chosen == [{"role": "assistant", "content": "good"}]
    assert pref.rejected == [{"role": "assistant", "content": "bad"}]
    assert pref.columns == {"id": 1}
