"""SFT rows with images (r1lab.data.images): image parts and the `images` column read from JSONL with paths
relative to the file, the processor's inputs with labels masked token by token (prompt, image tokens), a
visual-task export read back, a LLaVA forward + backward on a collated batch, and each bad input.
Tiny random models from tests/vlm_tiny.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from r1lab.config import DataConfig
from r1lab.data import IGNORE
from r1lab.data.images import (
    build_image_sft_dataset,
    collate_images,
    image_example,
    read_image_sft_data,
)
from r1lab.errors import UserError
from r1lab.models.vlm import load_processor
from vlm_tiny import BUILDERS, build_text_llm, png

IMAGE_TOKENS = {"llava": 16, "idefics3": 4, "qwen2_vl": 4}  # the fixtures' sizes (tests/vlm_tiny.py)


def _qwen2_vl_processor(path: Path):
    """Qwen2VLProcessor insists on a video processor, which needs torchvision (not installed here): build it
    with the image processor and tokenizer only (the class check skipped); images never reach the video side."""
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil, Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    tokenizer = AutoTokenizer.from_pretrained(path)
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda *a: None):
        return Qwen2VLProcessor(
            image_processor=Qwen2VLImageProcessorPil.from_pretrained(path),
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=tokenizer.chat_template,
        )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm")
    return {name: build(root / name) for name, build in BUILDERS.items()} | {
        "text": build_text_llm(root / "text")
    }


@pytest.fixture(scope="module")
def processors(folders) -> dict:
    return {
        "llava": load_processor(str(folders["llava"])),
        "idefics3": load_processor(str(folders["idefics3"])),
        "qwen2_vl": _qwen2_vl_processor(folders["qwen2_vl"]),
    }


def _write(folder: Path, rows: list[dict], images: dict[str, bytes]) -> Path:
    for name, data in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    file = folder / "train.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return file


def _chat(image: str = "images/a.png", answer: str = "Red.") -> dict:
    user = [{"type": "image", "image": image}, {"type": "text", "text": "What colour?"}]
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("arch", ["llava", "idefics3", "qwen2_vl"])
def test_labels_token_by_token(processors, tmp_path, arch):
    processor = processors[arch]
    file = _write(tmp_path, [_chat()], {"images/a.png": png()})
    (example,) = build_image_sft_dataset(DataConfig(path=str(file)), processor)
    ids, labels = example["input_ids"], example["labels"]
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    assert ids.count(image_id) == IMAGE_TOKENS[arch]
    # by hand: the answer and its end-of-turn token are the only targets; the template's final "\n" is not
    answer = tokenizer("Red.<|im_end|>", add_special_tokens=False)["input_ids"]
    n = len(ids)
    assert ids[n - 1 - len(answer) : n - 1] == answer
    expected = [IGNORE] * (n - 1 - len(answer)) + answer + [IGNORE]
    assert labels == expected
    for t in range(n):  # every image token (and every token the expansion inserted) is masked
        if ids[t] == image_id:
            assert labels[t] == IGNORE
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids[n - 1 - len(answer) - len(header) : n - 1 - len(answer)] == header  # the prompt ends there
    assert example["pixel_values"].dtype == torch.float32
    if arch == "qwen2_vl":
        assert example["image_grid_thw"].tolist() == [[1, 4, 4]]
        assert example["mm_token_type_ids"][0].tolist() == [int(i == image_id) for i in ids]
    if arch == "idefics3":
        assert example["pixel_attention_mask"].shape == (1, 1, 32, 32)


def test_images_column_with_paths_relative_to_the_file(processors, tmp_path, monkeypatch):
    data = tmp_path / "data"
    red, green = png(), png(color=(10, 200, 40))
    row = {
        "prompt": "<image>Left, then <image>right: which is green?",
        "completion": "The second.",
        "images": ["pics/red.png", "pics/green.png"],
    }
    second_row = {"prompt": "<image>What colour?", "completion": "Green.", "images": "pics/green.png"}
    _write(data, [row, second_row], {"pics/red.png": red, "pics/green.png": green})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    read = read_image_sft_data(DataConfig(path="../data/train.jsonl"))
    first, second = read.rows
    assert [_pixels(i).tolist() for i in first.images] == [
        _pixels(Image.open(io.BytesIO(b))).tolist() for b in (red, green)
    ]
    assert first.conversation.messages[0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Left, then "},
        {"type": "image"},
        {"type": "text", "text": "right: which is green?"},
    ]
    assert first.conversation.first_target == 1 and "images" not in first.conversation.columns
    assert first.where.endswith("train.jsonl:1") and second.where.endswith("train.jsonl:2")
    assert _pixels(second.images[0]).tolist() == _pixels(Image.open(io.BytesIO(green))).tolist()
    example = image_example(processors["llava"], first)
    assert example["pixel_values"].shape == (2, 3, 32, 32)
    assert example["input_ids"].count(processors["llava"].tokenizer.convert_tokens_to_ids("<image>")) == 32


def test_line_numbers_skip_blank_lines_and_follow_the_held_out_rows(tmp_path):
    from r1lab.data.splits import held_out

    rows = [_chat(answer=f"Answer {i}.") for i in range(4)]
    file = _write(tmp_path, rows, {"images/a.png": png()})
    lines = file.read_text().splitlines()
    file.write_text("\n".join([lines[0], "", *lines[1:]]) + "\n")  # row i > 0 is on line i + 2
    read = read_image_sft_data(DataConfig(path=str(file), eval_fraction=0.25), seed=3)
    (out,) = held_out(4, 0.25, 3)
    line = {i: 1 if i == 0 else i + 2 for i in range(4)}
    assert [r.where for r in read.eval.rows] == [f"{file}:{line[out]}"]
    assert [r.where for r in read.rows] == [f"{file}:{line[i]}" for i in range(4) if i != out]
    answers = [r.conversation.messages[-1]["content"] for r in read.rows]
    assert answers == [f"Answer {i}." for i in range(4) if i != out]


@pytest.mark.parametrize("stored", ["save_to_disk", "parquet"])
def test_datasets_image_features_from_a_folder_and_parquet(processors, tmp_path, stored):
    """datasets' Image feature reads back as {bytes, path} dicts; image parts stored in Arrow carry
    `image: None` on text parts and `text: None` on image parts."""
    import datasets

    red = png()
    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    features = datasets.Features(
        {
            "messages": [{"role": datasets.Value("string"), "content": [part]}],
            "images": datasets.Sequence(datasets.Image()),
        }
    )
    user = [{"type": "image", "text": None}, {"type": "text", "text": "What colour?"}]
    messages = [
        {"role": "user", "content": user},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    ]
    ds = datasets.Dataset.from_dict(
        {"messages": [messages], "images": [[Image.open(io.BytesIO(red))]]}, features=features
    )
    path = tmp_path / ("ds" if stored == "save_to_disk" else "train.parquet")
    ds.save_to_disk(str(path)) if stored == "save_to_disk" else ds.to_parquet(str(path))
    (row,) = read_image_sft_data(DataConfig(path=str(path))).rows
    assert _pixels(row.images[0]).tolist() == _pixels(Image.open(io.BytesIO(red))).tolist()
    assert row.where == f"{path}, record 1"
    example = image_example(processors["idefics3"], row)
    targets = [t for t in example["labels"] if t != IGNORE]
    assert processors["idefics3"].tokenizer.decode(targets) == "Red.<|im_end|>"


def test_a_visual_task_export_reads_back_into_model_inputs(processors, tmp_path):
    from r1lab.tasks import get_task
    from r1lab.tasks.visual import write_visual_jsonl

    records = get_task("count").generate(3, seed=0, size=64)
    file = write_visual_jsonl(tmp_path / "count.jsonl", records)
    cfg = DataConfig(path=str(file), max_length=512)
    read = read_image_sft_data(cfg)
    assert len(read.rows) == 3
    for record, row in zip(records, read.rows, strict=True):
        assert (
            _pixels(row.images[0]).tolist() == _pixels(Image.open(io.BytesIO(record["images"][0]))).tolist()
        )
    dataset = build_image_sft_dataset(cfg, processors["llava"], read=read)
    tokenizer = processors["llava"].tokenizer
    for record, example in zip(records, dataset, strict=True):
        targets = [t for t in example["labels"] if t != IGNORE]
        assert tokenizer.decode(targets) == record["completion"] + "<|im_end|>"
        assert example["pixel_values"].shape == (1, 3, 32, 32)
    assert dataset.stats["kept"] == 3 and dataset.stats["dropped"] == 0


def _masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """By hand: position t predicts labels[t + 1]; the mean over the supervised targets."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = labels[:, 1:]
    keep = target != IGNORE
    picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
    return -(picked * keep).sum() / keep.sum()


def test_llava_forward_backward_on_a_batch(folders, processors, tmp_path):
    from transformers import AutoModelForImageTextToText

    rows = [_chat(answer="Red, with a white stripe."), _chat("images/b.png", answer="Green.")]
    file = _write(tmp_path, rows, {"images/a.png": png(), "images/b.png": png(color=(10, 200, 40))})
    dataset = build_image_sft_dataset(DataConfig(path=str(file)), processors["llava"])
    pad = processors["llava"].tokenizer.pad_token_id
    batch = collate_images(list(dataset), pad)
    lengths = [len(e["input_ids"]) for e in dataset]
    assert lengths[0] > lengths[1] and batch["input_ids"].shape == (2, lengths[0])
    assert batch["attention_mask"][1].tolist() == [1] * lengths[1] + [0] * (lengths[0] - lengths[1])
    assert (batch["labels"][1, lengths[1] :] == IGNORE).all() and batch["pixel_values"].shape == (
        2,
        3,
        32,
        32,
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(folders["llava"])
    out = model(**batch, use_cache=False)
    expected = _masked_cross_entropy(out.logits, batch["labels"])
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss.double(), expected, rtol=1e-5)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the padded row's logits equal its own forward's
    alone = collate_images([dataset[1]], pad)
    with torch.no_grad():
        single = model(**alone, use_cache=False).logits
    assert torch.allclose(out.logits[1, : lengths[1]].detach(), single[0], atol=1e-5)


@pytest.mark.parametrize("arch", ["idefics3", "qwen2_vl"])
def test_a_batch_of_two_one_and_no_images_matches_each_row(folders, processors, tmp_path, arch):
    from transformers import AutoModelForImageTextToText

    two = {"messages": _chat()["messages"], "images": []}
    two["messages"][0]["content"].insert(0, {"type": "image", "image": "images/b.png"})
    text = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        "images": [],
    }
    images = {"images/a.png": png(), "images/b.png": png(color=(0, 0, 200))}
    file = _write(tmp_path, [two, _chat(), text], images)
    dataset = build_image_sft_dataset(DataConfig(path=str(file)), processors[arch])
    assert "pixel_values" not in dataset[2]
    batch = collate_images(list(dataset), processors[arch].tokenizer.pad_token_id)
    if arch == "idefics3":  # [rows with images, most images, ...]: the one-image row padded with a zero image
        assert batch["pixel_values"].shape == (2, 2, 3, 32, 32)
        assert (batch["pixel_values"][1, 1] == 0).all() and not batch["pixel_attention_mask"][1, 1].any()
    else:  # 16 patches of 14 x 14 x 3 x 2 (temporal) values per image, one grid row per image
        assert batch["pixel_values"].shape == (3 * 16, 1176)
        assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 3
    model = AutoModelForImageTextToText.from_pretrained(folders[arch]).eval()
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits
        for r, example in enumerate(dataset):
            single = model(**collate_images([example], 0), use_cache=False).logits[0]
            assert torch.allclose(logits[r, : len(example["input_ids"])], single, atol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_name_file_line_and_fix(folders, processors, tmp_path):
    good = {"images/a.png": png()}
    missing = _write(tmp_path / "missing", [_chat(), _chat("images/nope.png")], good)
    with pytest.raises(UserError, match="does not exist") as e:
        read_image_sft_data(DataConfig(path=str(missing)))
    assert e.value.where == f"{missing}:2" and str(missing.parent) in e.value.fix

    unreadable = _write(tmp_path / "bad", [_chat()], {"images/a.png": b"not a png"})
    with pytest.raises(UserError, match="cannot read image") as e:
        read_image_sft_data(DataConfig(path=str(unreadable)))
    assert e.value.where == f"{unreadable}:1"

    truncated = _write(tmp_path / "cut", [_chat()], {"images/a.png": png()[:60]})
    with pytest.raises(UserError, match="cannot read image") as e:
        read_image_sft_data(DataConfig(path=str(truncated)))

    row = {"prompt": "<image>Which?", "completion": "A.", "images": ["images/a.png", "images/a.png"]}
    mismatch = _write(tmp_path / "count", [row], good)
    with pytest.raises(UserError, match=r"1 image placeholder.*lists 2 image") as e:
        read_image_sft_data(DataConfig(path=str(mismatch)))
    assert e.value.where == f"{mismatch}:1"

    url = _write(tmp_path / "url", [_chat("https://example.com/a.png")], {})
    with pytest.raises(UserError, match="URL"):
        read_image_sft_data(DataConfig(path=str(url)))
    part = {"type": "image", "url": "http://example.com/a.png"}
    url = _write(
        tmp_path / "url", [{"messages": [{"role": "user", "content": [part]}, _chat()["messages"][1]]}], {}
    )
    with pytest.raises(UserError, match="URL"):
        read_image_sft_data(DataConfig(path=str(url)))

    ok = _write(tmp_path / "ok", [_chat()], good)
    text_only = load_processor(str(folders["text"]))
    with pytest.raises(UserError, match="text-only") as e:
        build_image_sft_dataset(DataConfig(path=str(ok)), text_only)
    assert e.value.where.startswith(f"{ok}:1")

    # the limit: a row's image tokens (16 per LLaVA image here) must fit data.max_length
    with pytest.raises(UserError, match=r"1 image.*16 tokens, more than data\.max_length 12") as e:
        build_image_sft_dataset(DataConfig(path=str(ok), max_length=12), processors["llava"])
    assert e.value.where == f"{ok}:1"
    # a cut after the image keeps it whole; a cut through it drops the row
    (full,) = build_image_sft_dataset(DataConfig(path=str(ok)), processors["llava"])
    n = len(full["input_ids"])  # ends "Red.<|im_end|>\n": a cut of 2 keeps "Red" as a target
    (kept,) = build_image_sft_dataset(DataConfig(path=str(ok), max_length=n - 2), processors["llava"])
    assert kept["input_ids"] == full["input_ids"][: n - 2] and kept["labels"] == full["labels"][: n - 2]
    assert kept["attention_mask"].shape == (1, n - 2)
    dataset = build_image_sft_dataset(DataConfig(path=str(ok), max_length=18), processors["llava"])
    assert len(dataset) == 0 and dataset.stats["dropped"] == 1

    with pytest.raises(UserError, match="packing is not supported for rows with images"):
        collate_images([kept], 0, packing=True)
