"""A RewardMap-like route task: a grid map with walls; answer a shortest path from the green to the red cell.

The image is a rows x cols grid: black cells are walls, the start cell is green, the goal red. The answer is
the moves, e.g. "R, R, D, L" (U/D/L/R or up/down/left/right). The `route` reward gives 1.0 for any shortest path
and dense detail credit (RewardMap's "detail" term) for the correct leading steps of a wrong one.
"""

from __future__ import annotations

import json
import random
from collections import deque
from typing import Any, ClassVar

from PIL import Image, ImageDraw

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, format_instruction, require
from r1lab.tasks.visual.base import VisualTask
from r1lab.tasks.visual.draw import problem_id

_NAMES = {"U": "up", "D": "down", "L": "left", "R": "right"}
CELL = 24  # pixels per grid cell
MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}


def distances(rows: int, cols: int, walls: set[tuple[int, int]], goal: tuple[int, int]) -> dict:
    """Steps from every reachable cell to the goal (breadth-first search over free cells)."""
    dist = {goal: 0}
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES.values():
            cell = (r + dr, c + dc)
            if 0 <= cell[0] < rows and 0 <= cell[1] < cols and cell not in walls and cell not in dist:
                dist[cell] = dist[(r, c)] + 1
                queue.append(cell)
    return dist


@TASKS.register("route")
class Route(VisualTask):
    name = "route"
    reward = "route"
    defaults: ClassVar[dict[str, Any]] = {"rows": 5, "cols": 5, "wall_percent": 25, "min_steps": 3}
    description = "a shortest path on a grid map with walls; dense credit for the correct leading steps"

    def check(self, opts: dict[str, Any]) -> None:
        for side in ("rows", "cols"):
            require(3 <= opts[side] <= 12, self.name, f"{side} must be between 3 and 12, got {opts[side]}")
        require(0 <= opts["wall_percent"] <= 50, self.name, "wall_percent must be between 0 and 50")
        require(
            1 <= opts["min_steps"] <= opts["rows"] + opts["cols"] - 2,
            self.name,
            "min_steps must be between 1 and rows + cols - 2",
        )

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        rows, cols = opts["rows"], opts["cols"]
        cells = [(r, c) for r in range(rows) for c in range(cols)]
        while True:
            start, goal = rng.sample(cells, 2)
            walls = {
                cell
                for cell in cells
                if cell not in (start, goal) and rng.randrange(100) < opts["wall_percent"]
            }
            dist = distances(rows, cols, walls, goal)
            if dist.get(start, 0) >= opts["min_steps"]:
                break
        path, cell = [], start  # the first shortest path in U, D, L, R order
        while cell != goal:
            move, cell = next(
                (m, (cell[0] + dr, cell[1] + dc))
                for m, (dr, dc) in MOVES.items()
                if dist.get((cell[0] + dr, cell[1] + dc), -1) == dist[cell] - 1
            )
            path.append(move)
        prompt = (
            f"The image is a map of {rows} rows and {cols} columns. Black cells are walls. Find a shortest path "
            f"from the green cell to the red cell, moving one cell up (U), down (D), left (L) or right (R) at a "
            f"time, never into a wall. Write the moves separated by commas. {format_instruction('moves')}"
        )
        wall_list = sorted([list(w) for w in walls])
        key = json.dumps([rows, cols, wall_list, start, goal])
        record = {"id": problem_id(self.name, key), "prompt": prompt, "answer": ", ".join(path)}
        columns = {"rows": rows, "cols": cols, "walls": wall_list, "start": list(start), "goal": list(goal)}
        return key, record | columns

    def solve(self, record: dict) -> str:
        (sr, sc), (gr, gc) = record["start"], record["goal"]
        walls = ", ".join(f"({r + 1},{c + 1})" for r, c in record["walls"]) or "none"
        lines = [
            f"Start (green): row {sr + 1}, column {sc + 1}. Goal (red): row {gr + 1}, column {gc + 1}.",
            f"Walls (row,column): {walls}.",
        ]
        r, c = sr, sc
        for move in record["answer"].split(", "):
            r, c = r + MOVES[move][0], c + MOVES[move][1]
            lines.append(f"{_NAMES[move]} to row {r + 1}, column {c + 1}")
        lines.append(f"That reaches the goal in {len(lines) - 2} moves, the fewest possible.")
        return "\n".join([*lines, f"{ANSWER_PREFIX} {record['answer']}"])

    def render(self, record: dict) -> list[Image.Image]:
        rows, cols = record["rows"], record["cols"]
        image = Image.new("RGB", (cols * CELL + 1, rows * CELL + 1), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        fills = {tuple(w): (0, 0, 0) for w in record["walls"]}
        fills[tuple(record["start"])] = (30, 170, 60)
        fills[tuple(record["goal"])] = (220, 40, 40)
        for r in range(rows):
            for c in range(cols):
                box = (c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
                draw.rectangle(box, fill=fills.get((r, c), (255, 255, 255)), outline=(150, 150, 150))
        return [image]
