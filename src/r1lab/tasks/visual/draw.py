"""Drawing for the visual tasks: scenes of simple coloured shapes, rendered with Pillow into PNG bytes.

A scene is data (a list of {"shape", "colour", "x", "y", "r"}: centre and radius in pixels); rendering uses no
randomness, so the same scene gives the same pixels, and Pillow's PNG encoder (no timestamp, no metadata) the
same bytes.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterable
from typing import Any

from PIL import Image, ImageDraw, ImageFont

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (30, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 60, 180),
}
SHAPES = ("circle", "square", "triangle")
WHITE = (255, 255, 255)


def problem_id(task: str, key: str) -> str:
    """A short stable id for a problem (its images are written as images/<id>-<j>.png)."""
    return f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def plural(shape: str) -> str:
    return f"{shape}s"


def draw_shape(draw: ImageDraw.ImageDraw, obj: dict[str, Any], dx: int = 0, dy: int = 0) -> None:
    """One shape of a scene, filled in its colour with a dark outline (offset by dx, dy)."""
    x, y, r = obj["x"] + dx, obj["y"] + dy, obj["r"]
    fill, outline = COLOURS[obj["colour"]], (20, 20, 20)
    if obj["shape"] == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=2)
    elif obj["shape"] == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=2)
    else:  # triangle, point up
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill, outline=outline, width=2)


def render_scene(
    objects: Iterable[dict[str, Any]], size: int, background: Image.Image | None = None
) -> Image.Image:
    image = background.copy() if background is not None else Image.new("RGB", (size, size), WHITE)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        draw_shape(draw, obj)
    return image


def random_scene(
    rng: random.Random,
    n: int,
    size: int,
    colours: list[str],
    radius: tuple[int, int] = (10, 18),
    margin: int = 4,
) -> list[dict[str, Any]]:
    """`n` shapes at random places that do not overlap (rejection sampling; fewer if the canvas is full)."""
    objects: list[dict[str, Any]] = []
    for _ in range(200 * n):
        if len(objects) == n:
            break
        r = rng.randint(*radius)
        x, y = rng.randint(r + margin, size - r - margin), rng.randint(r + margin, size - r - margin)
        if all((x - o["x"]) ** 2 + (y - o["y"]) ** 2 > (r + o["r"] + margin) ** 2 for o in objects):
            objects.append(
                {"shape": rng.choice(SHAPES), "colour": rng.choice(colours), "x": x, "y": y, "r": r}
            )
    return objects


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (the same glyphs on every machine)."""
    return ImageFont.load_default(size=size)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; lossless whatever the level
    return buffer.getvalue()


def describe(obj: dict[str, Any]) -> str:
    return f"{obj['colour']} {obj['shape']}"
