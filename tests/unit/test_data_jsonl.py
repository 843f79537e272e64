"""write_jsonl, the one JSONL writer: what it writes reads back through read_records, a new file appears whole,
and no other module writes JSON lines by hand."""

from __future__ import annotations

import re
from pathlib import Path

import r1lab
from r1lab.data import read_records, write_jsonl


def test_written_records_read_back_and_append_adds_lines(tmp_path) -> None:
    path = tmp_path / "sub" / "x.jsonl"
    rows = [{"prompt": "1 + 1", "answer": 2}, {"prompt": "é", "where": tmp_path}]
    assert write_jsonl(path, rows) == path
    assert read_records(str(path)) == [rows[0], {"prompt": "é", "where": str(tmp_path)}]  # a path as str
    write_jsonl(path, [{"n": 3}], append=True)
    assert [r.get("n") for r in read_records(str(path))] == [None, None, 3]
    write_jsonl(path, [{"n": 4}])  # a new file replaces the old one whole, through a temporary sibling
    assert read_records(str(path)) == [{"n": 4}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.jsonl"]


def test_no_module_writes_json_lines_by_hand() -> None:
    src = Path(r1lab.__file__).parent
    by_hand = re.compile(r"json\.dumps\([^\n]*\)\s*\+\s*\"\\n\"")
    found = [
        f"{p.relative_to(src)}:{i}"
        for p in sorted(src.rglob("*.py"))
        if p != src / "data" / "jsonl.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if by_hand.search(line) and "indent=" not in line  # an indented .json file is not JSON lines
    ]
    assert found == [], f"use r1lab.data.write_jsonl instead: {found}"
