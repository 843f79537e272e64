"""Built-in verifiable tasks: seeded generators with gold answers, step-by-step solutions and a default reward.

from r1lab.tasks import get_task
records = get_task("addition").generate(100, seed=0, split="train", digits=3)
"""

from r1lab.tasks import arithmetic, code_task, countdown, lookup, ordering, table, visual  # noqa: F401  (register them)
from r1lab.tasks.base import (
    ANSWER_PREFIX,
    SPLITS,
    TASKS,
    Task,
    extract_answer,
    format_instruction,
    get_task,
    has_answer_line,
    split_of,
)

__all__ = [
    "ANSWER_PREFIX",
    "SPLITS",
    "TASKS",
    "Task",
    "extract_answer",
    "format_instruction",
    "get_task",
    "has_answer_line",
    "split_of",
]
