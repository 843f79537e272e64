"""SFT rows with images for vision-language models: read image content, build the processor's model inputs,
mask the labels, and batch the rows.

Where images come from, in a row's `messages` (or `prompt` / `completion`) column:
  - content parts `{"type": "image", "image": PATH | bytes | {"bytes": ..., "path": ...}}` (the dict is how
    HF datasets' Image feature reads back, from Parquet or `datasets`; keys "path" / "url" work as "image");
  - placeholders, `{"type": "image"}` parts without a value or `<image>` in the text, filled in order from the
    row's `images` column (a list of paths, bytes or Image-feature dicts; `data.columns: {images: <col>}` maps it).
A relative PATH is resolved from the data file's folder (from `data.path` itself when it is a folder), never from
the working directory. URLs are refused: nothing is downloaded.

Labels are those of the text SFT path (`tokenize_conversation`: assistant tokens through the end-of-turn token)
on the chat text before the processor expands each image; the processor's ids are then aligned to those ids, so
every token the expansion inserts (image tokens, Idefics3's <fake_token_around_image> / <global-img>) and every
image token id is -100, as are the prompt and (in `collate_images`) the padding.
Packing is refused for image rows: a packed row would have to split each example's pixel values and image
grids (and Qwen2-VL's 3D rope positions) per example, which the packed collate does not do.
Limits checked: the row's image tokens alone must fit `data.max_length` (else no truncation can keep its images
whole); a longer row is truncated only after its last image token, otherwise dropped (counted in `stats`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import torch

from r1lab.config import DataConfig
from r1lab.data.formats import Conversation, Schema, normalise, resolve_schema
from r1lab.data.readers import read_records
from r1lab.data.splits import EVAL_SPLIT, SplitDataset, held_out
from r1lab.data.tokenize import IGNORE, tokenize_conversation
from r1lab.errors import UserError

PLACEHOLDER = "<image>"
_SLOT = re.compile("\ue000(\\d+)\ue001")  # private-use marks: an image slot's place in the normalised text
_COLUMNS = ("messages", "prompt", "completion")
_PER_TOKEN = ("attention_mask", "mm_token_type_ids", "token_type_ids")  # [1, tokens] tensors of an example


@dataclass
class ImageRow:
    """A normalised conversation whose image parts are `{"type": "image", "image": PIL.Image}` in order."""

    conversation: Conversation
    images: list[Any]
    where: str  # "file:line" (JSONL) or "source, record N"


@dataclass
class ImageRecords:
    rows: list[ImageRow]
    total: int
    source: str
    eval: ImageRecords | None = None


# ------------------------------------------------------------------------------------------------ reading


def read_image_sft_data(cfg: DataConfig, *, seed: int = 0) -> ImageRecords:
    """Read the SFT rows of `cfg.path` with their images opened (and the held-out part, as `read_sft_data`)."""
    records, wheres = _records(cfg.path, cfg.split, cfg)
    held: ImageRecords | None = None
    if cfg.eval_path:
        held = _rows(*_records(cfg.eval_path, EVAL_SPLIT, cfg), cfg, cfg.eval_path)
    elif cfg.eval_fraction > 0:
        out = held_out(len(records), cfg.eval_fraction, seed)
        keep = [i for i in range(len(records)) if i not in out]
        held = _rows([records[i] for i in sorted(out)], [wheres[i] for i in sorted(out)], cfg, cfg.path)
        records, wheres = [records[i] for i in keep], [wheres[i] for i in keep]
    return _rows(records, wheres, cfg, cfg.path, held)


def find_image_row(cfg: DataConfig) -> str | None:
    """Where (file:line, or "source, record N") the first training row with an image is, or None; no image is
    opened (so a text-only model can refuse image rows before it loads)."""
    records, wheres = _records(cfg.path, cfg.split, cfg)
    column = cfg.columns.get("images", "images")
    for record, (where, _) in zip(records, wheres, strict=True):
        if record.get(column) or any(_has_image_part(record.get(cfg.columns.get(c, c))) for c in _COLUMNS):
            return where
    return None


def _has_image_part(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_image_part(v) for v in value)
    if isinstance(value, dict):
        return value.get("type") == "image" or any(_has_image_part(v) for v in value.values())
    return False


def _records(path: str, split: str, cfg: DataConfig) -> tuple[list[dict], list[tuple[str, Path]]]:
    """The records and, for each, where it is ("file:line" for a JSONL file) and the folder its paths are from."""
    records = read_records(path, split=split, subset=cfg.subset, limit=cfg.limit)
    local = Path(path).expanduser()
    base = local.parent if local.is_file() else local
    if local.is_file() and local.suffix.lower() in (".jsonl", ".ndjson"):
        with local.open(
            encoding="utf-8"
        ) as f:  # the line numbers of the non-blank lines, as the reader skips
            lines = [n for n, line in enumerate(f, start=1) if line.strip()]
        return records, [(f"{local}:{lines[i]}", base) for i in range(len(records))]
    return records, [(f"{path}, record {i + 1}", base) for i in range(len(records))]


def _rows(
    records: list[dict],
    wheres: list[tuple[str, Path]],
    cfg: DataConfig,
    source: str,
    held: ImageRecords | None = None,
) -> ImageRecords:
    schema = resolve_schema(set().union(*records), cfg, source)
    if schema.format not in ("messages", "prompt_completion"):
        raise UserError(
            f"SFT with images trains on conversations or prompt + completion pairs, but {source} is in "
            f"format {schema.format!r}",
            where="data.format",
            fix="give the data a `messages` column or `prompt` + `completion` columns",
        )
    rows = []
    for record, (where, base) in zip(records, wheres, strict=True):
        row = image_row(record, schema, cfg, where, base)
        if row.conversation.has_target():
            rows.append(row)
    return ImageRecords(rows, len(records), source, held)


def image_row(record: dict[str, Any], schema: Schema, cfg: DataConfig, where: str, base: Path) -> ImageRow:
    """One record -> its conversation with image parts, each image opened (relative paths from `base`)."""
    slots: list[Any] = []  # an image part's own value, or None for a placeholder the images column fills

    def mark(value: Any) -> Any:
        if isinstance(value, str):
            return _text_slots(value, slots)
        if isinstance(value, list):
            return [mark(v) for v in value]
        if isinstance(value, dict):
            if value.get("type") == "image":
                slots.append(next((value[k] for k in ("image", "path", "url") if value.get(k)), None))
                return {"type": "text", "text": f"\ue000{len(slots) - 1}\ue001"}
            return {k: mark(v) if k in ("content", "value", "text") else v for k, v in value.items()}
        return value

    marked = dict(record)
    for name in _COLUMNS:
        if name in schema.columns and schema.columns[name] in record:
            marked[schema.columns[name]] = mark(record[schema.columns[name]])
    conv = normalise(marked, schema, cfg, where)
    assert isinstance(conv, Conversation)
    column = conv.columns.pop("images", None)
    column = [] if column is None else column if isinstance(column, list | tuple) else [column]
    free = [k for k, v in enumerate(slots) if v is None]
    if len(free) != len(column):
        raise UserError(
            f"the row has {len(free)} image placeholder(s) ({PLACEHOLDER} or image parts without an image) "
            f"but its images column lists {len(column)} image(s)",
            where=where,
            fix=f"give one {PLACEHOLDER} / image part per entry of `images`, in order",
        )
    for k, value in zip(free, column, strict=True):
        slots[k] = value
    order: list[int] = []
    for message in conv.messages:
        pieces = _SLOT.split(message["content"])
        if len(pieces) == 1:
            continue
        parts: list[dict[str, Any]] = []
        for j, piece in enumerate(pieces):
            if j % 2:
                order.append(int(piece))
                parts.append({"type": "image"})
            elif piece:
                parts.append({"type": "text", "text": piece})
        message["content"] = parts
    images = [open_image(slots[k], base, where) for k in order]
    return ImageRow(conv, images, where)


def _text_slots(text: str, slots: list[Any]) -> str:
    out = []
    for j, piece in enumerate(text.split(PLACEHOLDER)):
        if j:
            slots.append(None)
            out.append(f"\ue000{len(slots) - 1}\ue001")
        out.append(piece)
    return "".join(out)


def open_image(value: Any, base: Path, where: str) -> Any:
    """A PIL RGB image from a path (relative to `base`), bytes, or an Image-feature dict {bytes, path}."""
    from r1lab.models.vlm import _open

    if isinstance(value, dict):  # datasets' Image feature: bytes when stored, else a path
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            raise UserError(
                f"image {value[:80]!r} is a URL; r1lab does not download images",
                where=where,
                fix="download the images and give their paths (relative to the data file)",
            )
        path = Path(value).expanduser()
        value = path if path.is_absolute() else base / path
        if not value.is_file():
            raise UserError(
                f"image file {value} does not exist",
                where=where,
                fix=f"give a path relative to the data file's folder ({base}) or an absolute one",
            )
    try:
        return _open(value)
    except UserError as e:
        raise UserError(e.what, where=where, fix=e.fix) from None
    except OSError as e:  # e.g. a truncated PNG: the header opens, the pixels do not
        raise UserError(
            f"cannot read image {str(value)[:80]!r}: {e}", where=where, fix="re-export the image"
        ) from None


# ------------------------------------------------------------------------------------------------ inputs


class ImageSFTDataset(SplitDataset):
    """Examples {"input_ids", "labels", and the processor's image tensors (pixel_values, ...)}."""


def build_image_sft_dataset(
    cfg: DataConfig, processor: Any, *, seed: int = 0, read: ImageRecords | None = None
) -> ImageSFTDataset:
    """Model inputs and labels of every row (`read`: what `read_image_sft_data` returned, else read it now)."""
    read = read or read_image_sft_data(cfg, seed=seed)
    eval_set = None if read.eval is None else build_image_sft_dataset(cfg, processor, read=read.eval)
    stats = dict(total=read.total, skipped_no_assistant=read.total - len(read.rows), truncated=0, dropped=0)
    examples = []
    for row in read.rows:
        example = image_example(processor, row)
        ids = example["input_ids"]
        is_image = example.pop("image_mask")
        if sum(is_image) > cfg.max_length:
            raise UserError(
                f"the row's {len(row.images)} image(s) take {sum(is_image)} tokens, more than "
                f"data.max_length {cfg.max_length}",
                where=row.where,
                fix="give the row fewer images, use smaller images, or raise data.max_length",
            )
        if len(ids) > cfg.max_length:
            last = max(i for i, flag in enumerate(is_image) if flag) if any(is_image) else -1
            targets = [t for t in example["labels"][: cfg.max_length] if t != IGNORE]
            if cfg.overlong == "drop" or last >= cfg.max_length or not targets:
                stats["dropped"] += 1  # a cut through an image would leave pixel values without their tokens
                continue
            for key in ("input_ids", "labels"):
                example[key] = example[key][: cfg.max_length]
            for key in _PER_TOKEN:
                if key in example:
                    example[key] = example[key][:, : cfg.max_length]
            stats["truncated"] += 1
        examples.append(example)
    stats["kept"] = len(examples)
    stats["target_tokens"] = sum(t != IGNORE for e in examples for t in e["labels"])
    return ImageSFTDataset(examples, stats, eval_set)


def image_example(processor: Any, row: ImageRow) -> dict[str, Any]:
    """The processor's inputs of one row with `labels` (lists of ints) and `image_mask` (True on the tokens
    the image expansion made, or with an image token id)."""
    from r1lab.models.vlm import image_inputs

    conv = row.conversation
    tokenizer = getattr(processor, "tokenizer", processor)
    images = iter(row.images)
    filled = [
        m | {"content": [p | {"image": next(images)} if p["type"] == "image" else p for p in m["content"]]}
        if isinstance(m["content"], list)
        else m
        for m in conv.messages
    ]
    try:
        inputs = image_inputs(processor, filled, add_generation_prompt=False)
        view = copy.copy(tokenizer)  # the tokenizer, rendering with the processor's chat template
        view.chat_template = getattr(processor, "chat_template", None) or tokenizer.chat_template
        short, short_labels = tokenize_conversation(view, conv.messages, conv.first_target)
    except UserError as e:
        raise UserError(e.what, where=row.where + (f", {e.where}" if e.where else ""), fix=e.fix) from None
    ids = inputs.pop("input_ids")[0].tolist()
    labels, inserted = _align(short, short_labels, ids, row.where)
    image_ids = {tokenizer.convert_tokens_to_ids(t) for t in _image_tokens(processor)}
    image_mask = [flag or i in image_ids for i, flag in zip(ids, inserted, strict=True)]
    labels = [IGNORE if m else t for t, m in zip(labels, image_mask, strict=True)]
    return {"input_ids": ids, "labels": labels, "image_mask": image_mask, **dict(inputs)}


def _image_tokens(processor: Any) -> list[str]:
    """The processor's image token strings (`image_token` and kin: Idefics3's fake/global image tokens)."""
    names = ("image_token", "fake_image_token", "global_image_token")
    return [t for n in names if isinstance(t := getattr(processor, n, None), str)]


def _align(short: list[int], labels: list[int], ids: list[int], where: str) -> tuple[list[int], list[bool]]:
    """Labels for `ids` (the processor's, images expanded) from those of `short` (the same text before the
    expansion); the flags say which tokens the expansion inserted."""
    out, inserted = [IGNORE] * len(ids), [True] * len(ids)
    matcher = SequenceMatcher(None, short, ids, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out[b0:b1] = labels[a0:a1]
            inserted[b0:b1] = [False] * (b1 - b0)
        elif any(t != IGNORE for t in labels[a0:a1]):
            raise UserError(
                "the processor changed the tokens of an assistant turn (not only the image placeholders)",
                where=where,
                fix="keep images in user turns, or check the processor's chat template",
            )
    return out, inserted


# ------------------------------------------------------------------------------------------------ batching


def collate_images(
    examples: list[dict[str, Any]], pad_token_id: int, *, packing: bool = False
) -> dict[str, torch.Tensor]:
    """A right-padded batch of image examples: input_ids, labels (-100 on padding and on each row's first
    token, as `collate`), attention_mask and the other per-token tensors padded; pixel values and image grids
    concatenated over the batch (Idefics3's [1, images, ...] layout padded with all-zero images, which the
    model drops). Packing raises UserError (see the module doc)."""
    if packing:
        raise UserError(
            "packing is not supported for rows with images",
            where="packing",
            fix="set packing: false for vision-language SFT",
        )
    width = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, torch.Tensor] = {}
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for r, e in enumerate(examples):
        input_ids[r, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        labels[r, 1 : len(e["labels"])] = torch.tensor(e["labels"][1:])
    batch["input_ids"], batch["labels"] = input_ids, labels
    for key in sorted(set().union(*examples) - {"input_ids", "labels"}):
        values = [e[key] for e in examples if key in e]
        if key in _PER_TOKEN:  # a row without images has no mm_token_type_ids: all text (0)
            values = [e.get(key, torch.zeros(1, len(e["input_ids"]), dtype=torch.long)) for e in examples]
            batch[key] = torch.cat([torch.nn.functional.pad(v, (0, width - v.shape[-1])) for v in values])
        elif values[0].dim() == (5 if key == "pixel_values" else 4) and key.startswith("pixel"):
            most = max(v.shape[1] for v in values)  # Idefics3: [1, images, ...] per row
            batch[key] = torch.cat([_pad_dim1(v, most) for v in values])
        else:
            batch[key] = torch.cat(values)
    return batch


def _pad_dim1(value: torch.Tensor, size: int) -> torch.Tensor:
    pad = torch.zeros((value.shape[0], size - value.shape[1], *value.shape[2:]), dtype=value.dtype)
    return torch.cat([value, pad], dim=1)


__all__ = [
    "ImageRecords",
    "ImageRow",
    "ImageSFTDataset",
    "build_image_sft_dataset",
    "collate_images",
    "find_image_row",
    "image_example",
    "open_image",
    "read_image_sft_data",
]
