"""build_sft_dataset: formats end to end, counts, truncation/drop, eval splits and the all-bad cases."""

from __future__ import annotations

import json

import pytest

from r1lab.config import DataConfig
from r1lab.data import IGNORE, build_sft_dataset, tokenize_conversation
from r1lab.errors import UserError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def conv(i: int, answer: str = "The answer is 19.") -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} + 7?"},
            {"role": "assistant", "content": answer},
        ]
    }


def target_text(tok, example) -> str:
    return tok.decode([t for t in example["labels"] if t != IGNORE])


def test_messages_dataset_and_stats(tmp_path, tiny_tokenizer):
    no_assistant = {"messages": [{"role": "user", "content": "Hello!"}]}
    path = write(tmp_path / "d.jsonl", [conv(1), no_assistant, conv(2)])
    ds = build_sft_dataset(DataConfig(path=path), tiny_tokenizer)
    assert len(ds) == 2 and ds.eval is None
    assert ds.stats | {"target_tokens": 0} == dict(
        total=3, skipped_no_assistant=1, truncated=0, dropped=0, kept=2, target_tokens=0
    )
    assert ds.stats["target_tokens"] == sum(sum(t != IGNORE for t in e["labels"]) for e in ds)
    assert target_text(tiny_tokenizer, ds[0]) == "The answer is 19.<|im_end|>"
    ids, labels = tokenize_conversation(tiny_tokenizer, conv(1)["messages"])
    assert ds[0] == {"input_ids": ids, "labels": labels}


def test_prompt_completion_csv_with_mapping_and_system_prompt(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.csv"
    path.write_text("question,solution\nWhat is 1 + 1?,2\nHello!,I am fine.\n")
    cfg = DataConfig(
        path=str(path), columns={"prompt": "question", "completion": "solution"}, system_prompt="Be brief."
    )
    ds = build_sft_dataset(cfg, tiny_tokenizer)
    assert [target_text(tiny_tokenizer, e) for e in ds] == ["2<|im_end|>", "I am fine.<|im_end|>"]
    text = tiny_tokenizer.decode(ds[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 1 + 1?")


def test_overlong_truncate_keeps_prompt_and_cuts_completion(tmp_path, tiny_tokenizer):
    long_answer = "step by step reasoning " * 20
    path = write(tmp_path / "d.jsonl", [conv(1), conv(2, long_answer)])
    full, _ = tokenize_conversation(tiny_tokenizer, conv(2, long_answer)["messages"])
    short, _ = tokenize_conversation(tiny_tokenizer, conv(1)["messages"])
    max_length = len(short) + 5
    assert len(full) > max_length
    ds = build_sft_dataset(DataConfig(path=path, max_length=max_length), tiny_tokenizer)
    assert ds.stats["truncated"] == 1 and ds.stats["dropped"] == 0 and len(ds) == 2
    assert ds[1]["input_ids"] == full[:max_length]
    assert not target_text(tiny_tokenizer, ds[1]).endswith(
        "<|im_end|>"
    )  # cut: it does not learn to stop there

    dropped = build_sft_dataset(DataConfig(path=path, max_length=max_length, overlong="drop"), tiny_tokenizer)
    assert len(dropped) == 1 and dropped.stats["dropped"] == 1 and dropped.stats["truncated"] == 0


def test_prompt_longer_than_max_length_is_dropped_even_when_truncating(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "d.jsonl", [conv(1), {"prompt": "The quick brown fox " * 30, "completion": "x"}])
    cfg = DataConfig(path=path, max_length=40, format="auto")
    with pytest.raises(UserError, match="a record has no column messages") as e:  # two formats in one file
        build_sft_dataset(cfg, tiny_tokenizer)
    assert e.value.where == f"{path}, record 2"
    path = write(
        tmp_path / "e.jsonl",
        [{"prompt": "hi", "completion": "ok"}, {"prompt": "The quick fox " * 30, "completion": "x"}],
    )
    ds = build_sft_dataset(DataConfig(path=path, max_length=40), tiny_tokenizer)
    assert len(ds) == 1 and ds.stats["dropped"] == 1


def test_all_without_assistant_is_an_error(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 2)
    with pytest.raises(UserError, match="2 without an assistant turn"):
        build_sft_dataset(DataConfig(path=path), tiny_tokenizer)


def test_all_too_long_with_drop_is_an_error(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "d.jsonl", [conv(1)])
    with pytest.raises(UserError, match="1 dropped as longer than max_length 5"):
        build_sft_dataset(DataConfig(path=path, max_length=5, overlong="drop"), tiny_tokenizer)


def test_prompt_only_data_is_refused_for_sft(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "d.jsonl", [{"prompt": "hi", "answer": "1"}])
    with pytest.raises(UserError, match="format 'prompt'"):
        build_sft_dataset(DataConfig(path=path), tiny_tokenizer)


def test_malformed_line_fails_before_anything_is_built(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(conv(1)) + "\nnot json\n")
    with pytest.raises(UserError, match="malformed JSON line") as e:
        build_sft_dataset(DataConfig(path=str(path)), tiny_tokenizer)
    assert e.value.where == f"{path}:2"


def test_eval_fraction_is_seeded_and_keeps_order(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "d.jsonl", [conv(i, f"answer {i}") for i in range(10)])
    cfg = DataConfig(path=path, eval_fraction=0.3)
    a = build_sft_dataset(cfg, tiny_tokenizer, seed=1)
    b = build_sft_dataset(cfg, tiny_tokenizer, seed=1)
    c = build_sft_dataset(cfg, tiny_tokenizer, seed=2)
    assert len(a) == 7 and len(a.eval) == 3 and a.eval.stats["total"] == 3
    assert list(a) == list(b) and list(a.eval) == list(b.eval)
    assert list(a.eval) != list(c.eval)
    answers = [int(target_text(tiny_tokenizer, e).split()[1].removesuffix("<|im_end|>")) for e in a]
    assert answers == sorted(answers)  # dataset order is kept
    held = {int(target_text(tiny_tokenizer, e).split()[1].removesuffix("<|im_end|>")) for e in a.eval}
    assert held.isdisjoint(answers) and len(held | set(answers)) == 10


def test_eval_path(tmp_path, tiny_tokenizer):
    train = write(tmp_path / "train.jsonl", [conv(1), conv(2)])
    held = write(tmp_path / "held.jsonl", [conv(3)])
    ds = build_sft_dataset(DataConfig(path=train, eval_path=held), tiny_tokenizer)
    assert len(ds) == 2 and len(ds.eval) == 1


def test_parquet_messages_with_uneven_message_keys(tmp_path, tiny_tokenizer):
    """Parquet stores messages as structs: keys missing from a message come back as None and are dropped."""
    import pandas as pd

    rows = [
        {
            "messages": [
                {"role": "user", "content": "Hello!"},
                {"role": "assistant", "content": "Hi.", "name": "bot"},
            ]
        },
        conv(1),
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    ds = build_sft_dataset(DataConfig(path=str(tmp_path / "d.parquet")), tiny_tokenizer)
    assert [target_text(tiny_tokenizer, e) for e in ds] == ["Hi.<|im_end|>", "The answer is 19.<|im_end|>"]
