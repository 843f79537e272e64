"""The one JSONL writer (metrics, samples, generated task sets, reward errors, eval samples); `read_records`
in readers.py reads them back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]], *, append: bool = False) -> Path:
    """Write `records` one JSON object per line (values JSON has no type for, like paths, as strings).

    A new file is written to a temporary sibling and renamed into place, so a reader never sees half of it;
    `append` adds the lines to the end of the file instead (creating it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record, default=str) + "\n" for record in records)
    if append:
        with path.open("a") as f:
            f.write(text)
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
