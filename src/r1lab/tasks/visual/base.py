"""What the visual tasks share: problems that carry their images, and writing them next to a JSONL file.

A visual problem is a text task's record (prompt, answer, completion, the columns its reward reads) plus
`id` (stable, from the problem's key) and `images`: a list of PNG files as bytes. The images are rendered from
the record's own metadata after the split filter, so only kept problems are drawn.

On disk (`write_visual_jsonl`), images go to `images/<id>-<j>.png` next to the data file and each row's prompt
becomes one user message whose content lists the images, then the text:
`{"role": "user", "content": [{"type": "image", "image": "images/<id>-0.png"}, {"type": "text", "text": ...}]}`
(paths relative to the data file); the row keeps every other column and drops the bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from r1lab.tasks.base import Task, require, write_jsonl


class VisualTask(Task):
    """A Task whose records also hold `images`; subclasses implement `render(record) -> list[Image]`."""

    size_range = (64, 512)

    def generate(self, n: int, seed: int = 0, split: str = "train", **options: Any) -> list[dict]:
        from r1lab.tasks.visual.draw import png_bytes

        records = super().generate(n, seed=seed, split=split, **options)
        for record in records:
            record["images"] = [png_bytes(image) for image in self.render(record)]
        return records

    def check_size(self, size: int) -> None:
        low, high = self.size_range
        require(low <= size <= high, self.name, f"size must be between {low} and {high} pixels, got {size}")

    def render(self, record: dict) -> list[Image.Image]:
        raise NotImplementedError


def image_message(record: dict, paths: list[str]) -> list[dict[str, Any]]:
    """The prompt as one user message: its images (by path), then its text."""
    content: list[dict[str, Any]] = [{"type": "image", "image": p} for p in paths]
    return [{"role": "user", "content": [*content, {"type": "text", "text": record["prompt"]}]}]


def write_visual_jsonl(path: str | Path, records: list[dict]) -> Path:
    """Write visual problems as JSONL with their PNGs under `images/` beside it (see the module doc)."""
    path = Path(path)
    rows = []
    for record in records:
        paths = []
        for j, data in enumerate(record.get("images", [])):
            name = f"images/{record['id']}-{j}.png"
            (path.parent / "images").mkdir(parents=True, exist_ok=True)
            (path.parent / name).write_bytes(data)
            paths.append(name)
        rows.append(
            {k: v for k, v in record.items() if k != "images"} | {"prompt": image_message(record, paths)}
        )
    return write_jsonl(path, rows)


def write_task_file(path: str | Path, records: list[dict]) -> Path:
    """A built-in task's problems as JSONL: with their images beside it when they have any."""
    if any("images" in record for record in records):
        return write_visual_jsonl(path, records)
    return write_jsonl(path, records)
