"""Read records (one dict per example) from JSONL, JSON, Parquet, CSV files, folders of them, or HF `datasets`.

Our own readers handle local files so that a bad line is reported with its file and line number; hub names and
folders written by `Dataset.save_to_disk` go through the `datasets` library.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1lab.errors import UserError

EXTENSIONS = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")


def read_records(
    path: str, *, split: str = "train", subset: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """All records (or the first `limit`) of a file, a folder of files, or a datasets hub name, in stored order.

    A folder picks the files for `split`: a `<split>/` sub-folder, else files whose name starts with the split
    name (`train.jsonl`, `train-00000.parquet`), else every data file in it. `split` is ignored for a single file.
    """
    local = Path(path).expanduser()
    if local.is_file():
        records = _read_file(local, limit)
    elif local.is_dir():
        records = _read_folder(local, split, limit)
    elif _looks_local(path):
        raise UserError(
            f"data file not found: {path}",
            where="data.path",
            fix=f"check the path (relative paths are resolved from {Path.cwd()})",
        )
    else:
        records = load_hub(path, split=split, subset=subset, limit=limit)
    if not records:
        raise UserError(
            f"the dataset is empty: {path} (split {split!r})",
            where="data.path",
            fix="point data.path at a file or split that holds examples",
        )
    return records


def load_hub(name: str, *, split: str, subset: str | None = None, limit: int | None = None) -> list[dict]:
    """Records of a `datasets` hub dataset (or anything `datasets.load_dataset` accepts, e.g. a local folder)."""
    import datasets

    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # datasets raises many kinds: not found, offline, bad config, bad split
        raise UserError(
            f"could not load dataset {name!r} (subset {subset!r}, split {split!r}): {type(e).__name__}: {e}",
            where="data.path",
            fix="check the name, data.subset and data.split, and the network (HF_HUB_OFFLINE); "
            f"a local file needs one of the extensions {', '.join(EXTENSIONS)}",
        ) from None
    return _take(ds, limit)


def _looks_local(path: str) -> bool:
    """A path the user meant as a local file: it has a data extension or starts like a file-system path."""
    return path.lower().endswith(EXTENSIONS) or path.startswith((".", "/", "~"))


def _take(ds: Any, limit: int | None) -> list[dict]:
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds.to_list()


def _read_folder(folder: Path, split: str, limit: int | None) -> list[dict]:
    if (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        import datasets

        ds = datasets.load_from_disk(str(folder))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise UserError(
                    f"split {split!r} not in {folder}: it has {', '.join(ds)}", where="data.split"
                )
            ds = ds[split]
        return _take(ds, limit)
    if (folder / split).is_dir():
        folder = folder / split
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(EXTENSIONS))
    files = [p for p in files if p.name.lower().startswith(split.lower())] or files
    if not files:
        raise UserError(
            f"no data files in folder {folder}",
            where="data.path",
            fix=f"add files with one of the extensions {', '.join(EXTENSIONS)}",
        )
    records: list[dict] = []
    for file in files:
        records += _read_file(file, None if limit is None else limit - len(records))
        if limit is not None and len(records) >= limit:
            break
    return records


def _read_file(path: Path, limit: int | None) -> list[dict]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        rows = _iter_jsonl(path)
    elif name.endswith(".json"):
        rows = iter(_read_json(path))
    elif name.endswith(".parquet"):
        rows = _iter_parquet(path)
    elif name.endswith(".csv"):
        rows = _iter_csv(path)
    else:
        raise UserError(
            f"unknown data file type {path.suffix!r}: {path}",
            where="data.path",
            fix=f"use one of {', '.join(EXTENSIONS)}, or a datasets hub name",
        )
    records: list[dict] = []
    if limit is not None and limit <= 0:
        return records
    for row in rows:  # streaming: nothing past the limit is read
        records.append(row)
        if limit is not None and len(records) >= limit:
            break
    return records


def _iter_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"malformed JSON line: {e.msg} (column {e.colno})",
                    where=f"{path}:{number}",
                    fix="fix or remove that line; each line must be one JSON object",
                ) from None
            if not isinstance(row, dict):
                raise UserError(
                    f"a JSONL line must be a JSON object, got {type(row).__name__}",
                    where=f"{path}:{number}",
                    fix='write one {"key": value, ...} object per line',
                )
            yield row


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(
            f"malformed JSON: {e.msg} (column {e.colno})",
            where=f"{path}:{e.lineno}",
            fix="fix the JSON syntax",
        ) from None
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}: the one list of records inside
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(
            f"a .json data file must hold a list of objects: {path}",
            where=str(path),
            fix="write [{...}, {...}] or use JSONL (one object per line)",
        )
    return data


def _iter_parquet(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid for files that are not parquet
        raise UserError(f"cannot read parquet file: {e}", where=str(path), fix="check the file") from None
    for batch in parquet.iter_batches():
        yield from batch.to_pylist()


def _iter_csv(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:  # more cells than header names
                raise UserError(
                    "a CSV row has more cells than the header has columns",
                    where=f"{path}:{reader.line_num}",
                    fix="quote cells that contain commas",
                )
            yield row
