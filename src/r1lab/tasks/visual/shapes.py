"""CLS-RL-style shape tasks: `count` (how many shapes of a kind) and `classify` (the class name of the one shape).

Both draw coloured circles, squares and triangles on white. `count` is scored by the `arithmetic` reward (the
exact integer), `classify` by `exact` (the class name, e.g. "red circle", case and spaces ignored).
"""

from __future__ import annotations

import json
import random
from typing import Any, ClassVar

from PIL import Image

from r1lab.tasks.base import ANSWER_PREFIX, TASKS, format_instruction, require
from r1lab.tasks.visual.base import VisualTask
from r1lab.tasks.visual.draw import COLOURS, SHAPES, describe, plural, problem_id, random_scene, render_scene

_LOOKS = {
    "circle": "it is round, with no corners",
    "square": "it has four equal sides and four right angles",
    "triangle": "it has three corners, one pointing up",
}


def _colours(task: str, count: int) -> list[str]:
    require(2 <= count <= len(COLOURS), task, f"colours must be between 2 and {len(COLOURS)}, got {count}")
    return list(COLOURS)[:count]


@TASKS.register("count")
class Count(VisualTask):
    name = "count"
    reward = "arithmetic"
    defaults: ClassVar[dict[str, Any]] = {"max_objects": 6, "colours": 3, "size": 128}
    description = "count the shapes of one colour (or one kind) in an image of 1..max_objects shapes"

    def check(self, opts: dict[str, Any]) -> None:
        require(1 <= opts["max_objects"] <= 12, self.name, "max_objects must be between 1 and 12")
        _colours(self.name, opts["colours"])
        self.check_size(opts["size"])

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        size, colours = opts["size"], _colours(self.name, opts["colours"])
        scene = random_scene(rng, rng.randint(1, opts["max_objects"]), size, colours, (size // 16, size // 9))
        scene.sort(key=lambda o: (o["x"], o["y"]))  # left to right, as the solution reads them
        asked = rng.choice(scene)
        if rng.random() < 0.5:
            kind = {"colour": asked["colour"], "shape": asked["shape"]}
            what = f"{asked['colour']} {plural(asked['shape'])}"
        else:
            kind = {"shape": asked["shape"]}
            what = plural(asked["shape"])
        count = sum(all(o[k] == v for k, v in kind.items()) for o in scene)
        prompt = f"How many {what} are in the image? {format_instruction('number')}"
        key = json.dumps([scene, kind])
        record = {"id": problem_id(self.name, key), "prompt": prompt, "answer": str(count), "size": size}
        return key, record | {"scene": scene, "kind": kind}

    def solve(self, record: dict) -> str:
        kind, lines, hits = record["kind"], ["The shapes from left to right:"], 0
        for i, obj in enumerate(record["scene"], 1):
            match = all(obj[k] == v for k, v in kind.items())
            hits += match
            lines.append(f"{i}. a {describe(obj)}" + (f" - matches, {hits} so far" if match else ""))
        return "\n".join([*lines, f"{ANSWER_PREFIX} {record['answer']}"])

    def render(self, record: dict) -> list[Image.Image]:
        return [render_scene(record["scene"], record["size"])]


@TASKS.register("classify")
class Classify(VisualTask):
    name = "classify"
    reward = "exact"
    defaults: ClassVar[dict[str, Any]] = {"colours": 3, "size": 64}
    description = "name the class (colour and shape, e.g. 'red circle') of the one shape in the image"

    def check(self, opts: dict[str, Any]) -> None:
        _colours(self.name, opts["colours"])
        self.check_size(opts["size"])

    def sample(self, rng: random.Random, **opts: Any) -> tuple[str, dict]:
        size, colours = opts["size"], _colours(self.name, opts["colours"])
        (obj,) = random_scene(rng, 1, size, colours, (size // 8, size // 3))
        classes = [f"{c} {s}" for c in colours for s in SHAPES]
        prompt = (
            f"Which class is the shape in the image? The classes: {', '.join(classes)}. "
            f"{format_instruction('class name')}"
        )
        key = json.dumps([obj, colours])
        record = {"id": problem_id(self.name, key), "prompt": prompt, "answer": describe(obj), "size": size}
        return key, record | {"scene": [obj]}

    def solve(self, record: dict) -> str:
        obj = record["scene"][0]
        return "\n".join(
            [
                "The image shows one shape.",
                f"Its outline: {_LOOKS[obj['shape']]}, so it is a {obj['shape']}.",
                f"It is filled {obj['colour']}.",
                f"{ANSWER_PREFIX} {record['answer']}",
            ]
        )

    def render(self, record: dict) -> list[Image.Image]:
        return [render_scene(record["scene"], record["size"])]
