"""Built-in visual tasks drawn with Pillow: `jigsaw`, `count`, `classify`, `grounding`, `route`.

Each problem carries its images as PNG bytes (`images`) and the metadata its reward reads; `write_visual_jsonl`
writes them as JSONL with the PNGs under images/ beside it.
"""

from r1lab.tasks.visual import grounding, jigsaw, route, shapes  # noqa: F401  (register the tasks)
from r1lab.tasks.visual.base import VisualTask, write_task_file, write_visual_jsonl

__all__ = ["VisualTask", "write_task_file", "write_visual_jsonl"]
