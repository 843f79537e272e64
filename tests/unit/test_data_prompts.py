"""build_prompt_dataset: templated prompt ids, raw prompt text, and the columns the rewards receive."""

from __future__ import annotations

import json

import pytest

from r1lab.config import DataConfig
from r1lab.data import PromptExample, build_prompt_dataset
from r1lab.errors import UserError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prompt_column_with_answer(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "p.jsonl", [{"prompt": "What is 12 + 7?", "answer": "19", "level": 1}])
    ds = build_prompt_dataset(
        DataConfig(path=path, system_prompt="You are a helpful assistant."), tiny_tokenizer
    )
    assert ds.stats == {"total": 1, "dropped": 0, "kept": 1} and ds.eval is None
    ex = ds[0]
    assert isinstance(ex, PromptExample)
    assert ex.prompt_text == "What is 12 + 7?"
    assert ex.columns == {"answer": "19", "level": 1}
    text = tiny_tokenizer.decode(ex.prompt_ids)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"
    )
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 12 + 7?"},
    ]
    expected = tiny_tokenizer(
        tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )["input_ids"]
    assert ex.prompt_ids == expected


def test_messages_data_prompt_stops_before_last_assistant_turn(tmp_path, tiny_tokenizer):
    msgs = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "I am fine."}]
    path = write(tmp_path / "p.jsonl", [{"messages": msgs, "answer": "x"}])
    ex = build_prompt_dataset(DataConfig(path=path), tiny_tokenizer)[0]
    assert (
        tiny_tokenizer.decode(ex.prompt_ids) == "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ex.prompt_text == "Hello!" and ex.columns == {"answer": "x"}


def test_prompt_column_wins_over_messages_for_rl(tmp_path, tiny_tokenizer):
    msgs = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "I am fine."}]
    path = write(tmp_path / "p.jsonl", [{"prompt": "What is 1 + 1?", "messages": msgs, "answer": "2"}])
    ex = build_prompt_dataset(DataConfig(path=path), tiny_tokenizer)[0]
    assert ex.prompt_text == "What is 1 + 1?" and ex.columns == {"messages": msgs, "answer": "2"}


def test_mapped_columns_and_reserved_names(tmp_path, tiny_tokenizer):
    rows = [{"question": "1+1?", "solution": "It is 2.", "gold": "2", "completion_length": 3}]
    path = write(tmp_path / "p.jsonl", rows)
    cfg = DataConfig(path=path, columns={"prompt": "question", "completion": "solution", "answer": "gold"})
    ex = build_prompt_dataset(cfg, tiny_tokenizer)[0]
    assert ex.prompt_text == "1+1?"
    # names the reward call uses itself are passed with a data_ prefix
    assert ex.columns == {"answer": "2", "data_completion": "It is 2.", "data_completion_length": 3}


def test_long_prompts_are_dropped_and_counted(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "p.jsonl", [{"prompt": "hi"}, {"prompt": "The quick brown fox " * 40}])
    ds = build_prompt_dataset(DataConfig(path=path, max_length=30), tiny_tokenizer)
    assert len(ds) == 1 and ds.stats == {"total": 2, "dropped": 1, "kept": 1}
    with pytest.raises(UserError, match="every prompt"):
        build_prompt_dataset(DataConfig(path=path, max_length=3), tiny_tokenizer)


def test_missing_prompt_column_and_eval_fraction(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "p.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(UserError, match="found columns answer, question"):
        build_prompt_dataset(DataConfig(path=path), tiny_tokenizer)
    path = write(tmp_path / "q.jsonl", [{"prompt": f"q{i}", "answer": str(i)} for i in range(10)])
    ds = build_prompt_dataset(DataConfig(path=path, eval_fraction=0.2), tiny_tokenizer, seed=3)
    assert len(ds) == 8 and len(ds.eval) == 2
    assert {e.prompt_text for e in ds}.isdisjoint({e.prompt_text for e in ds.eval})
