"""Jigsaw-R1: an image cut into a grid x grid of pieces and shuffled; answer where each piece belongs.

The original image is a colour gradient (red grows to the right, blue grows downward) with a few shapes on
top, so each piece's background says where it came from. The shown image lays the pieces out shuffled; they are
numbered 1..n in reading order (left to right, top to bottom). The answer lists, for each position of the
original image in reading order, the number of the piece that belongs there: "2, 4, 1, 3". The `jigsaw` reward
gives the fraction of positions right (0 for an answer that is not a permutation of 1..n).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from typing import Any, ClassVar

from PIL import Image

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, format_instruction, require
from r1lab.tasks.visual.base import VisualTask
from r1lab.tasks.visual.draw import COLOURS, problem_id, random_scene, render_scene


@lru_cache(maxsize=8)
def gradient(size: int) -> Image.Image:
    """Red rises left to right, blue top to bottom (green fixed): a piece's colour gives its cell.

    Cached: callers must not draw on it (render_scene draws on a copy)."""
    red = Image.linear_gradient("L").rotate(90).resize((size, size))
    blue = Image.linear_gradient("L").resize((size, size))
    green = Image.new("L", (size, size), 90)
    return Image.merge("RGB", (red, green, blue))


def shuffle_pieces(image: Image.Image, grid: int, order: list[int]) -> Image.Image:
    """Shown position k (reading order) holds original piece order[k]; 2-pixel white seams between pieces."""
    side = image.width // grid
    seam = 2
    out = Image.new("RGB", (grid * side + (grid - 1) * seam,) * 2, (255, 255, 255))
    for k, piece in enumerate(order):
        r, c = divmod(piece, grid)
        tile = image.crop((c * side, r * side, (c + 1) * side, (r + 1) * side))
        kr, kc = divmod(k, grid)
        out.paste(tile, (kc * (side + seam), kr * (side + seam)))
    return out


@TASKS.register("jigsaw")
class Jigsaw(VisualTask):
    name = "jigsaw"
    reward = "jigsaw"
    defaults: ClassVar[dict[str, Any]] = {"grid": 2, "size": 192}
    description = "put the shuffled pieces of a grid x grid image back in place; partial credit per piece"

    def check(self, opts: dict[str, Any]) -> None:
        require(opts["grid"] in (2, 3), self.name, f"grid must be 2 or 3, got {opts['grid']}")
        self.check_size(opts["size"])
        require(opts["size"] % opts["grid"] == 0, self.name, "size must be a multiple of grid")

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        grid, size = opts["grid"], opts["size"]
        n = grid * grid
        scene = random_scene(rng, 3, size, list(COLOURS), (size // 12, size // 6))
        order = list(range(n))
        while order == sorted(order):
            rng.shuffle(order)
        # answer[p] = the shown number of the piece that belongs at original position p
        shown = {piece: k + 1 for k, piece in enumerate(order)}
        answer = ", ".join(str(shown[p]) for p in range(n))
        prompt = (
            f"The image is a picture cut into {grid}x{grid} pieces that were shuffled. The pieces are numbered "
            f"1 to {n} in reading order (left to right, top to bottom). For each position of the original "
            f"picture in reading order, give the number of the piece that belongs there, separated by commas. "
            f"{format_instruction('piece numbers')}"
        )
        key = json.dumps([scene, order])
        record = {"id": problem_id(self.name, key), "prompt": prompt, "answer": answer}
        return key, record | {"grid": grid, "size": size, "scene": scene, "order": order}

    def solve(self, record: dict) -> str:
        grid, order = record["grid"], record["order"]
        lines = [
            "The background gets redder to the right and bluer downward, so each piece's colour gives its cell."
        ]
        for k, piece in enumerate(order):
            r, c = divmod(piece, grid)
            lines.append(
                f"Piece {k + 1}: red level {c + 1} of {grid}, blue level {r + 1} of {grid} "
                f"-> row {r + 1}, column {c + 1}."
            )
        lines.append(f"In reading order the positions take pieces {record['answer']}.")
        return "\n".join([*lines, f"{ANSWER_PREFIX} {record['answer']}"])

    def render(self, record: dict) -> list[Image.Image]:
        original = render_scene(record["scene"], record["size"], background=gradient(record["size"]))
        return [shuffle_pieces(original, record["grid"], record["order"])]
