"""Built-in visual tasks: gold answers score 1.0, known wrong answers their hand-computed partial credit,
demonstrations end in the gold answer, disjoint splits, deterministic PNG bytes, and images that decode to the
stated size and show what the metadata says."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import load_reward
from r1lab.tasks import extract_answer, get_task, has_answer_line
from r1lab.tasks.visual import write_task_file
from r1lab.tasks.visual.draw import COLOURS, render_scene
from r1lab.tasks.visual.jigsaw import gradient, shuffle_pieces

VISUAL = ["count", "classify", "jigsaw", "grounding", "route"]


def _score(name: str, completion: str, record: dict, **kwargs) -> float:
    """Through the loader, as the RL loop calls it: the record's columns (prompt included) and the kwargs."""
    columns = {k: v for k, v in record.items() if k not in ("completion", "images")}
    return load_reward(RewardSpec(name=name, kwargs=kwargs))(completion, **columns)


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


@pytest.mark.parametrize("name", VISUAL)
def test_gold_scores_one_and_demonstrations_end_in_it(name: str) -> None:
    task = get_task(name)
    for record in task.generate(40, seed=1, split="test"):
        assert has_answer_line(record["completion"])
        assert extract_answer(record["completion"]) == record["answer"]
        assert _score(task.reward, record["completion"], record) == 1.0
        assert _score(task.reward, f"Answer: {record['answer']}", record) == 1.0


@pytest.mark.parametrize("name", VISUAL)
def test_same_seed_same_png_bytes_and_disjoint_splits(name: str) -> None:
    task = get_task(name)
    a = task.generate(20, seed=3, split="train")
    assert a == task.generate(20, seed=3, split="train")  # images included, byte for byte
    assert [r["images"] for r in a] != [r["images"] for r in task.generate(20, seed=4, split="train")]
    train = {r["id"] for r in task.generate(100, seed=0, split="train")}
    test = {r["id"] for r in task.generate(40, seed=0, split="test")} | {
        r["id"] for r in task.generate(40, seed=1, split="test")
    }
    assert len(train) == 100 and len(test) > 40
    assert not train & test


@pytest.mark.parametrize(
    ("name", "options", "size"),
    [
        ("count", {}, (128, 128)),
        ("classify", {"size": 96}, (96, 96)),
        ("jigsaw", {}, (194, 194)),  # two 96-pixel pieces and a 2-pixel seam
        ("jigsaw", {"grid": 3, "size": 150}, (154, 154)),
        ("grounding", {}, (192, 192)),
        ("route", {"rows": 4, "cols": 6}, (6 * 24 + 1, 4 * 24 + 1)),
    ],
)
def test_images_decode_with_the_stated_size(name: str, options: dict, size: tuple[int, int]) -> None:
    for record in get_task(name).generate(5, seed=0, **options):
        assert len(record["images"]) == 1
        image = Image.open(io.BytesIO(record["images"][0]))
        assert image.format == "PNG" and image.size == size


def test_jigsaw_gold_answer_reassembles_the_original_and_partial_credit() -> None:
    for grid in (2, 3):
        record = get_task("jigsaw").generate(3, seed=0, grid=grid, size=96)[0]
        shown = _image(record["images"][0])
        side = 96 // grid
        original = render_scene(record["scene"], 96, background=gradient(96))
        rebuilt = Image.new("RGB", (96, 96))
        for pos, number in enumerate(int(x) for x in record["answer"].split(", ")):
            k = number - 1
            kr, kc = divmod(k, grid)
            tile = shown.crop(
                (kc * (side + 2), kr * (side + 2), kc * (side + 2) + side, kr * (side + 2) + side)
            )
            r, c = divmod(pos, grid)
            rebuilt.paste(tile, (c * side, r * side))
        assert rebuilt.tobytes() == original.tobytes()
    record = {"prompt": "q", "answer": "2, 1, 3, 4"}
    cases = {"1, 2, 3, 4": 0.5, "2, 1, 4, 3": 0.5, "4, 3, 2, 1": 0.0, "2, 1, 3, 4": 1.0}
    cases |= {"2, 2, 3, 4": 0.0, "2, 1, 3": 0.0, "2, 1, 3, 4, 5": 0.0}  # not a permutation of 1..4
    for answer, expected in cases.items():
        assert _score("jigsaw", f"pieces...\nAnswer: {answer}", record) == expected, answer
    assert _score("jigsaw", "2, 1, 3, 4", record) == 0.0  # no answer line
    assert shuffle_pieces(original, 3, list(range(9))).size == (100, 100)


def test_grounding_f1_and_abstention() -> None:
    some, nothing = {"prompt": "q", "answer": "1, 3"}, {"prompt": "q", "answer": "none"}
    for answer, expected in {
        "1, 3": 1.0,
        "3, 1": 1.0,
        "1": 2 / 3,
        "1, 2": 0.5,
        "1, 3, 4": 0.8,
        "none": 0.0,
    }.items():
        assert _score("grounding", f"Answer: {answer}", some) == pytest.approx(expected), answer
    assert _score("grounding", "Answer: None.", nothing) == 1.0
    assert _score("grounding", "Answer: 2", nothing) == 0.0
    assert _score("grounding", "no answer line", some) == 0.0


def test_grounding_boxes_show_their_shapes_colour_and_the_gold_matches_the_expression() -> None:
    for record in get_task("grounding").generate(60, seed=2):
        image = _image(record["images"][0])
        for box in record["boxes"]:
            x0, y0, x1, y1 = box["box"]
            assert image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2 + 2)) == COLOURS[box["colour"]]
        gold = set() if record["answer"] == "none" else {int(x) for x in record["answer"].split(", ")}
        assert gold == _referred(record["expression"], record["boxes"])


def _referred(expression: str, boxes: list[dict]) -> set[int]:
    """The test's own reading of an expression over the box coordinates: 'the red circle [left of the blue
    square]'; the anchor, when named, is in the image at most once."""
    words = expression.split()
    centre = {b["id"]: ((b["box"][0] + b["box"][2]) / 2, (b["box"][1] + b["box"][3]) / 2) for b in boxes}
    kind = [b["id"] for b in boxes if (b["colour"], b["shape"]) == (words[1], words[2])]
    if len(words) == 3:
        return set(kind)
    anchors = [b["id"] for b in boxes if (b["colour"], b["shape"]) == (words[-2], words[-1])]
    assert len(anchors) <= 1
    if not anchors:
        return set()
    (ax, ay), relation = centre[anchors[0]], " ".join(words[3:-3])
    test = {
        "left of": lambda x, y: x < ax,
        "right of": lambda x, y: x > ax,
        "above": lambda x, y: y < ay,
        "below": lambda x, y: y > ay,
    }[relation]
    return {i for i in kind if test(*centre[i])}


ROUTE = {"prompt": "q", "rows": 3, "cols": 3, "walls": [[1, 1]], "start": [0, 0], "goal": [2, 2]}


@pytest.mark.parametrize(
    ("moves", "expected"),
    [
        ("R, R, D, D", 1.0),
        ("down, down, right, right", 1.0),
        ("R, D", 0.5 * 1 / 4),  # the second move walks into the wall
        ("R, L, R, R", 0.5 * 1 / 4),  # the second move goes away from the goal
        ("R, R, D", 0.5 * 3 / 4),  # stops one cell short
        ("R, R, D, D, U", 0.5 * 4 / 4),  # reaches the goal, then leaves: not a path to it
        ("U", 0.0),  # off the map
    ],
)
def test_route_reward_dense_detail(moves: str, expected: float) -> None:
    assert _score("route", f"Answer: {moves}", ROUTE) == pytest.approx(expected)


def test_route_image_matches_its_map_and_detail_weight() -> None:
    assert _score("route", "Answer: R, R, D", ROUTE, detail_weight=0.2) == pytest.approx(0.15)
    record = get_task("route").generate(1, seed=5)[0]
    image = _image(record["images"][0])
    centre = lambda cell: (cell[1] * 24 + 12, cell[0] * 24 + 12)  # noqa: E731
    assert image.getpixel(centre(record["start"])) == (30, 170, 60)
    assert image.getpixel(centre(record["goal"])) == (220, 40, 40)
    assert all(image.getpixel(centre(w)) == (0, 0, 0) for w in record["walls"])


def test_count_and_classify_wrong_answers() -> None:
    count = get_task("count").generate(1, seed=0)[0]
    assert _score("arithmetic", f"Answer: {int(count['answer']) + 1}", count) == 0.0
    shown = sum(all(o[k] == v for k, v in count["kind"].items()) for o in count["scene"])
    assert str(shown) == count["answer"]
    record = get_task("classify").generate(1, seed=0)[0]
    colour, shape = record["answer"].split()
    other = "square" if shape != "square" else "circle"
    assert _score("exact", f"Answer: {colour} {other}", record) == 0.0
    assert _score("exact", f"Answer: {record['answer'].upper()}", record) == 1.0
    image = _image(record["images"][0])
    obj = record["scene"][0]
    assert image.getpixel((obj["x"], obj["y"] + obj["r"] // 2)) == COLOURS[colour]


def test_write_visual_jsonl_layout(tmp_path) -> None:
    records = get_task("jigsaw").generate(3, seed=0)
    path = write_task_file(tmp_path / "data" / "jigsaw.jsonl", records)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3
    for row, record in zip(rows, records, strict=True):
        (message,) = row["prompt"]
        image_part, text_part = message["content"]
        assert message["role"] == "user" and image_part == {
            "type": "image",
            "image": f"images/{record['id']}-0.png",
        }
        assert text_part == {"type": "text", "text": record["prompt"]}
        assert (path.parent / image_part["image"]).read_bytes() == record["images"][0]
        assert "images" not in row and row["answer"] == record["answer"]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("jigsaw", {"grid": 4}),
        ("jigsaw", {"size": 100, "grid": 3}),
        ("grounding", {"boxes": 1}),
        ("count", {"size": 8}),
    ],
)
def test_bad_options(name: str, options: dict) -> None:
    with pytest.raises(UserError):
        get_task(name).generate(1, **options)


def test_data_make_writes_the_images_beside_the_file(tmp_path) -> None:
    from typer.testing import CliRunner

    from r1lab.cli import app

    out = tmp_path / "visual" / "route.jsonl"
    result = CliRunner().invoke(app, ["data", "make", "route", "--n", "2", "--out", str(out), "-o", "rows=4"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, record in zip(rows, get_task("route").generate(2, rows=4), strict=True):
        path = out.parent / row["prompt"][0]["content"][0]["image"]
        assert path.read_bytes() == record["images"][0] and row["rows"] == 4
