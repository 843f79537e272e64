"""Rex-Thinker-like grounding: which numbered boxes match a referring expression, or `none` (abstention).

The image shows `boxes` numbered boxes (the id is written at each box's top-left corner), each around one
shape. The expression names a kind ("the red circles") or a kind placed relative to a unique anchor ("the red
circle left of the blue square"; left/right/above/below compare box centres). When no box matches (the kind or
the anchor is absent) the answer is `none`. The `grounding` reward is the F1 of the answered ids against the
gold ids (1.0 for `none` when none match). Each record keeps `boxes` ([x0, y0, x1, y1] in pixels, with their
shape and colour) for rewards that score boxes instead of ids.
"""

from __future__ import annotations

import json
import random
from typing import Any, ClassVar

from PIL import Image, ImageDraw

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, format_instruction, require
from r1lab.tasks.visual.base import VisualTask
from r1lab.tasks.visual.draw import COLOURS, SHAPES, describe, draw_shape, font, problem_id, random_scene

RELATIONS = {  # relation -> (axis, sign): target centre < anchor centre along the axis, times sign
    "left of": ("x", 1),
    "right of": ("x", -1),
    "above": ("y", 1),
    "below": ("y", -1),
}


def matches(
    boxes: list[dict], kind: tuple[str, str], relation: str | None, anchor: tuple[str, str] | None
) -> list[int]:
    """The ids of the boxes holding `kind`, placed `relation` the (unique) anchor box when one is given."""
    of_kind = [b for b in boxes if (b["colour"], b["shape"]) == kind]
    if relation is None or anchor is None:
        return [b["id"] for b in of_kind]
    anchors = [b for b in boxes if (b["colour"], b["shape"]) == anchor]
    if not anchors:
        return []
    axis, sign = RELATIONS[relation]
    a = anchors[0]
    return [b["id"] for b in of_kind if b is not a and sign * (b[axis] - a[axis]) < 0]


@TASKS.register("grounding")
class Grounding(VisualTask):
    name = "grounding"
    reward = "grounding"
    defaults: ClassVar[dict[str, Any]] = {"boxes": 4, "colours": 3, "size": 192}
    description = "which numbered boxes match a referring expression ('none' when none does); F1 over ids"

    def check(self, opts: dict[str, Any]) -> None:
        require(2 <= opts["boxes"] <= 8, self.name, f"boxes must be between 2 and 8, got {opts['boxes']}")
        require(2 <= opts["colours"] <= len(COLOURS), self.name, f"colours must be 2 to {len(COLOURS)}")
        self.check_size(opts["size"])

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        size, colours = opts["size"], list(COLOURS)[: opts["colours"]]
        r = size // 14
        while True:
            scene = random_scene(rng, opts["boxes"], size, colours, (r, r), margin=r // 2 + 4)
            if len(scene) == opts["boxes"]:
                break
        boxes = [dict(o, id=i) for i, o in enumerate(sorted(scene, key=lambda o: (o["y"], o["x"])), 1)]
        kinds = sorted({(b["colour"], b["shape"]) for b in boxes})
        unique = [k for k in kinds if sum((b["colour"], b["shape"]) == k for b in boxes) == 1]
        kind, relation, anchor = self._pick(rng, kinds, colours), None, None
        others = [k for k in unique if k != kind]
        absent = [(c, s) for c in colours for s in SHAPES if (c, s) not in kinds]
        if others and rng.random() < 0.6:  # an anchor is unique in the image, or (15%) absent: answer none
            relation = rng.choice(sorted(RELATIONS))
            anchor = rng.choice(absent) if absent and rng.random() < 0.15 else rng.choice(others)
        expression = f"the {' '.join(kind)}" + (f" {relation} the {' '.join(anchor)}" if anchor else "")
        gold = matches(boxes, kind, relation, anchor)
        answer = ", ".join(map(str, gold)) or "none"
        prompt = (
            f"The image shows numbered boxes, each around one shape. Which boxes show {expression}? "
            f"(left/right/above/below compare box centres.) List the box numbers separated by commas, or "
            f"write none if no box matches. {format_instruction('box numbers or none')}"
        )
        key = json.dumps([boxes, expression])
        columns = {
            "boxes": [
                {
                    "id": b["id"],
                    "box": [
                        b["x"] - b["r"] - 3,
                        b["y"] - b["r"] - 3,
                        b["x"] + b["r"] + 3,
                        b["y"] + b["r"] + 3,
                    ],
                    "shape": b["shape"],
                    "colour": b["colour"],
                }
                for b in boxes
            ],
            "expression": expression,
            "size": size,
        }
        record = {"id": problem_id(self.name, key), "prompt": prompt, "answer": answer}
        return key, record | columns | {
            "_kind": kind,
            "_relation": relation,
            "_anchor": anchor,
            "_scene": boxes,
        }

    @staticmethod
    def _pick(rng: random.Random, kinds: list[tuple[str, str]], colours: list[str]) -> tuple[str, str]:
        """A kind in the image (80%) or any kind (which may be absent: abstention)."""
        return rng.choice(kinds) if rng.random() < 0.8 else (rng.choice(colours), rng.choice(SHAPES))

    def solve(self, record: dict) -> str:
        boxes, kind = record["_scene"], record["_kind"]
        relation, anchor = record["_relation"], record["_anchor"]
        lines = [f"Box {b['id']}: a {describe(b)} at x={b['x']}, y={b['y']}." for b in boxes]
        of_kind = [b for b in boxes if (b["colour"], b["shape"]) == kind]
        lines.append(f"Boxes with a {' '.join(kind)}: {', '.join(str(b['id']) for b in of_kind) or 'none'}.")
        if anchor is not None and of_kind:
            anchors = [b for b in boxes if (b["colour"], b["shape"]) == anchor]
            if not anchors:
                lines.append(f"There is no {' '.join(anchor)}, so nothing is {relation} it.")
            else:
                a = anchors[0]
                axis, _ = RELATIONS[relation]
                lines.append(f"The {' '.join(anchor)} is box {a['id']}, {axis}={a[axis]}.")
                for b in of_kind:
                    ok = b["id"] in matches(boxes, kind, relation, anchor)
                    lines.append(
                        f"Box {b['id']}: {axis}={b[axis]}, {'is' if ok else 'is not'} {relation} it."
                    )
        return "\n".join([*lines, f"{ANSWER_PREFIX} {record['answer']}"])

    def render(self, record: dict) -> list[Image.Image]:
        size = record["size"]
        image = Image.new("RGB", (size, size), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        points = max(10, size // 16)
        label = font(points)
        for b in record["boxes"]:
            x0, y0, x1, y1 = b["box"]
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            draw_shape(
                draw, {"shape": b["shape"], "colour": b["colour"], "x": cx, "y": cy, "r": (x1 - x0) // 2 - 3}
            )
            draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=1)
            draw.text(
                (x0 + 1, y0 - points if y0 >= points else y0 + 1), str(b["id"]), fill=(0, 0, 0), font=label
            )
        return [image]
