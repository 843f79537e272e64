"""A self-contained report.html: inline CSS, PNGs embedded as data URIs, so it renders with no network."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.35rem .7rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots img{width:520px;border:1px solid #eee}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.8rem}
.sample{border:1px solid #ddd;border-radius:6px;padding:.6rem;margin:.5rem 0;background:#fafafa}
pre{white-space:pre-wrap;margin:.3rem 0;font-size:.85rem}.meta{color:#666;font-size:.85rem}
"""


def markdown_table_to_html(table: str) -> str:
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    head, body = lines[0], lines[2:]
    out = ["<table><tr>", *[f"<th>{html.escape(c.strip())}</th>" for c in head], "</tr>"]
    for row in body:
        out += ["<tr>", *[f"<td>{html.escape(c.strip())}</td>" for c in row], "</tr>"]
    return "".join([*out, "</table>"])


def image_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def samples_html(path: Path, limit: int = 4) -> str:
    if not path.is_file():
        return "<p class=meta>no samples</p>"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:limit] if line.strip()]
    parts = []
    for row in rows:
        meta = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("prompt", "completion") and _scalar(v)
        )
        parts.append(
            "<div class=sample>"
            f"<div class=meta>{html.escape(meta)}</div>"
            f"<b>prompt</b><pre>{html.escape(str(row.get('prompt', '')))}</pre>"
            f"<b>completion</b><pre>{html.escape(str(row.get('completion', '')))}</pre></div>"
        )
    return "".join(parts)


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(str(value)) < 80


def page(title: str, parts: list[str]) -> str:
    """A whole self-contained page around already-rendered HTML parts."""
    head = f"<meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>"


def side_by_side(prompt: str, columns: dict[str, str]) -> str:
    """One problem: its prompt, then each model's completion in its own column."""
    cells = "".join(
        f"<div><b>{html.escape(label)}</b><pre>{html.escape(text)}</pre></div>"
        for label, text in columns.items()
    )
    return (
        f"<div class=sample><b>prompt</b><pre>{html.escape(prompt)}</pre><div class=pair>{cells}</div></div>"
    )
