"""Preference data: formats (strings, message lists, explicit or shared-prefix prompts, column mapping) and each
bad input (missing side, identical sides, differing prompts, overlong pairs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from r1lab.config import DataConfig
from r1lab.data.preference import build_preference_dataset, read_preference_data
from r1lab.errors import UserError


def write(path: Path, rows: list[dict[str, Any]], blank_after_first: bool = False) -> str:
    lines = [json.dumps(r) for r in rows]
    if blank_after_first:
        lines.insert(1, "")  # the reader skips it; places must still name the real line
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def test_strings_messages_and_shared_prefix_give_the_same_pair(tmp_path, tiny_tokenizer) -> None:
    rows = [
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
        {"prompt": [user("What is 2 + 2?")], "chosen": [bot("4")], "rejected": [bot("5")]},
        {"chosen": [user("What is 2 + 2?"), bot("4")], "rejected": [user("What is 2 + 2?"), bot("5")]},
        # an explicit prompt that the message lists repeat
        {
            "prompt": "What is 2 + 2?",
            "chosen": [user("What is 2 + 2?"), bot("4")],
            "rejected": [user("What is 2 + 2?"), bot("5")],
        },
    ]
    cfg = DataConfig(path=write(tmp_path / "p.jsonl", rows))
    read = read_preference_data(cfg)
    assert [p.prompt for _, p in read.pairs] == [[user("What is 2 + 2?")]] * 4
    assert [(p.chosen, p.rejected) for _, p in read.pairs] == [([bot("4")], [bot("5")])] * 4
    data = build_preference_dataset(cfg, tiny_tokenizer, read)
    assert all(ex == data[0] for ex in data)
    # with data.system_prompt the prompt gains a system message; sides that repeat the user turn still match
    with_system = read_preference_data(cfg.model_copy(update={"system_prompt": "Be brief."})).pairs
    system = {"role": "system", "content": "Be brief."}
    assert [p.prompt for _, p in with_system] == [[system, user("What is 2 + 2?")]] * 4
    ex = data[0]
    # the response continues the prompt exactly and ends on the end-of-turn token (ChatML's "\n" is not scored)
    full = tiny_tokenizer.apply_chat_template([user("What is 2 + 2?"), bot("4")], tokenize=False)
    ids = tiny_tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(ex["prompt_ids"]) + len(ex["chosen_ids"])] == ex["prompt_ids"] + ex["chosen_ids"]
    assert ex["chosen_ids"][-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert set(ex["chosen_mask"]) == {1}


def test_column_mapping_and_multi_turn_shared_prefix(tmp_path) -> None:
    convo = [user("Hi"), bot("Hello!"), user("What is 1 + 1?")]
    rows = [{"good": [*convo, bot("2")], "bad": [*convo, bot("3")]}]
    cfg = DataConfig(path=write(tmp_path / "p.jsonl", rows), columns={"chosen": "good", "rejected": "bad"})
    (_, pair), = read_preference_data(cfg).pairs  # fmt: skip
    assert pair.prompt == convo and pair.chosen == [bot("2")] and pair.rejected == [bot("3")]


def test_missing_rejected_side_names_file_and_line(tmp_path) -> None:
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b", "rejected": None}]
    path = write(tmp_path / "p.jsonl", rows, blank_after_first=True)
    with pytest.raises(UserError, match="no rejected response") as e:
        read_preference_data(DataConfig(path=path))
    assert e.value.where == f"{path}:3"
    rows[1] = {
        "prompt": "a",
        "chosen": "b",
    }  # no column at all (an explicit format, so not auto-detected away)
    path = write(tmp_path / "q.jsonl", rows)
    with pytest.raises(UserError, match="no column rejected") as e:
        read_preference_data(DataConfig(path=path, format="preference"))
    assert e.value.where == f"{path}:2"


def test_identical_sides_are_counted_and_skipped(tmp_path, tiny_tokenizer) -> None:
    rows = [
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "yes", "rejected": "no"},
    ]
    cfg = DataConfig(path=write(tmp_path / "p.jsonl", rows))
    data = build_preference_dataset(cfg, tiny_tokenizer, read_preference_data(cfg))
    assert data.stats == {"total": 2, "skipped_identical": 1, "truncated": 0, "dropped": 0, "kept": 1}
    with pytest.raises(UserError, match="no preference pair left"):
        read_preference_data(DataConfig(path=write(tmp_path / "q.jsonl", rows[:1])))


def test_differing_prompts_name_the_line(tmp_path) -> None:
    rows = [
        {"chosen": [user("A"), bot("1")], "rejected": [user("A"), bot("2")]},
        {"chosen": [user("What is 2 + 2?"), bot("4")], "rejected": [user("What is 3 + 3?"), bot("6")]},
    ]
    path = write(tmp_path / "p.jsonl", rows)
    with pytest.raises(UserError, match="different prompts") as e:
        read_preference_data(DataConfig(path=path))
    assert e.value.where == f"{path}:2"
    with pytest.raises(UserError, match="no prompt") as e:
        read_preference_data(DataConfig(path=write(tmp_path / "q.jsonl", [{"chosen": "a", "rejected": "b"}])))


def test_overlong_pairs_truncate_responses_never_the_prompt_or_drop(tmp_path, tiny_tokenizer) -> None:
    rows = [
        {"prompt": "q", "chosen": "yes", "rejected": "no"},
        {"prompt": "q", "chosen": "yes " * 40, "rejected": "no"},  # long chosen
        {
            "prompt": "The quick brown fox " * 30,
            "chosen": "yes",
            "rejected": "no",
        },  # the prompt alone is too long
    ]
    path = write(tmp_path / "p.jsonl", rows)
    cfg = DataConfig(path=path, max_length=24)
    read = read_preference_data(cfg)
    data = build_preference_dataset(cfg, tiny_tokenizer, read)
    assert data.stats == {"total": 3, "skipped_identical": 0, "truncated": 1, "dropped": 1, "kept": 2}
    short, cut = data
    assert cut["prompt_ids"] == short["prompt_ids"]  # the prompt is kept whole
    assert len(cut["prompt_ids"]) + len(cut["chosen_ids"]) == 24 and len(cut["chosen_mask"]) == len(
        cut["chosen_ids"]
    )
    assert cut["rejected_ids"] == short["rejected_ids"]  # already fits: untouched
    dropped = build_preference_dataset(cfg.model_copy(update={"overlong": "drop"}), tiny_tokenizer, read)
    assert dropped.stats["dropped"] == 2 and dropped.stats["truncated"] == 0 and len(dropped) == 1
