"""Readers: every file type, folders with splits, datasets on local files, and each bad input's message."""

from __future__ import annotations

import json

import pytest

from r1lab.data import load_hub, read_records
from r1lab.errors import UserError

ROWS = [{"prompt": f"q{i}", "answer": str(i)} for i in range(5)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reads_each_file_type_in_order(tmp_path):
    import pandas as pd

    write_jsonl(tmp_path / "a.jsonl", ROWS)
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "b.json").write_text(json.dumps({"data": ROWS}))
    pd.DataFrame(ROWS).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame(ROWS).to_csv(tmp_path / "a.csv", index=False)
    for name in ["a.jsonl", "a.json", "b.json", "a.parquet", "a.csv"]:
        assert read_records(str(tmp_path / name)) == ROWS, name


def test_limit_and_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n" + "{broken\n")
    assert (
        read_records(str(path), limit=2) == ROWS[:2]
    )  # streaming: the broken line after the limit is not read


def test_folder_picks_split_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:3])
    write_jsonl(tmp_path / "test.jsonl", ROWS[3:])
    assert read_records(str(tmp_path), split="train") == ROWS[:3]
    assert read_records(str(tmp_path), split="test") == ROWS[3:]
    sub = tmp_path / "nested"
    (sub / "validation").mkdir(parents=True)
    write_jsonl(sub / "validation" / "part-0.jsonl", ROWS[:1])
    write_jsonl(sub / "validation" / "part-1.jsonl", ROWS[1:2])
    assert read_records(str(sub), split="validation") == ROWS[:2]


def test_datasets_save_to_disk_and_load_dataset_on_local_files(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "saved")
    assert read_records(str(tmp_path / "saved"), split="train", limit=3) == ROWS[:3]
    with pytest.raises(UserError, match="split 'test' not in"):
        read_records(str(tmp_path / "saved"), split="test")
    repo = tmp_path / "repo"
    repo.mkdir()
    write_jsonl(repo / "train.jsonl", ROWS)
    assert load_hub(str(repo), split="train") == ROWS


def test_hub_name_that_cannot_be_loaded_is_a_user_error(monkeypatch):
    import datasets
    import huggingface_hub

    # The libraries read HF_HUB_OFFLINE when first imported, before the conftest fixture sets it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="could not load dataset 'no-such-org/no-such-dataset'") as e:
        read_records("no-such-org/no-such-dataset")
    assert e.value.where == "data.path"


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n" + '{"prompt": "x",\n')
    with pytest.raises(UserError, match="malformed JSON line") as e:
        read_records(str(path))
    assert e.value.where == f"{path}:3"
    path.write_text("[1, 2]\n")
    with pytest.raises(UserError, match="must be a JSON object") as e:
        read_records(str(path))
    assert e.value.where == f"{path}:1"


def test_malformed_json_file_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"a": 1},\n{"a": }\n]')
    with pytest.raises(UserError, match="malformed JSON") as e:
        read_records(str(path))
    assert e.value.where == f"{path}:3"


def test_missing_file_unknown_extension_and_empty(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        read_records(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="data file not found"):
        read_records("./nope/data")
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(UserError, match=r"unknown data file type '\.txt'"):
        read_records(str(tmp_path / "data.txt"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="dataset is empty"):
        read_records(str(tmp_path / "empty.jsonl"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="no data files in folder"):
        read_records(str(tmp_path / "folder"))


def test_csv_row_with_extra_cells(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,answer\nq,1\nq,2,3\n")
    with pytest.raises(UserError, match="more cells") as e:
        read_records(str(path))
    assert e.value.where == f"{path}:3"
