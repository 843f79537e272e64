"""Streaming safetensors I/O for merging: read one tensor at a time, write the output as it is computed.

`SafetensorsModel` reads the header(s) of a model folder (one `model.safetensors` or a sharded
`model.safetensors.index.json`) and then one tensor per `read` call, with a plain seek + read into a fresh
buffer: no memory map, so the process holds only the tensors it is working on (a mapped file's touched
pages would count as resident memory until unmapped). `StreamingWriter` lays out the output's shards from
the known names, dtypes and shapes up front, writes each shard's header first and then each tensor's bytes
as soon as it is computed: memory is one output tensor, not one shard. The files are standard safetensors.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from r1lab.errors import UserError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
INDEX = "model.safetensors.index.json"
# what an HF model folder holds besides its weights; copied from the first input that has each
COPIED = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def read_header(file: Path) -> dict[str, TensorInfo]:
    with file.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        if entry["dtype"] not in DTYPES:
            raise UserError(
                f"{file}: tensor {name!r} has dtype {entry['dtype']}, which merging does not read"
            )
        begin, end = entry["data_offsets"]
        out[name] = TensorInfo(
            file, DTYPES[entry["dtype"]], tuple(entry["shape"]), 8 + size + begin, 8 + size + end
        )
    return out


class SafetensorsModel:
    """The tensors of one model folder, read one at a time."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / INDEX
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
        if not files:
            raise UserError(
                f"no safetensors weights in {self.folder}",
                fix="merge models saved as safetensors (save_pretrained does by default)",
            )
        self.tensors: dict[str, TensorInfo] = {}
        for name in files:
            self.tensors.update(read_header(self.folder / name))
        self._handles: dict[Path, BinaryIO] = {}

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor, or only its rows [a, b) along the first dimension (read from disk, nothing else)."""
        info = self.tensors[name]
        shape, start, end = info.shape, info.start, info.end
        if rows is not None:
            row = (end - start) // shape[0]
            shape, start, end = (rows[1] - rows[0], *shape[1:]), start + rows[0] * row, start + rows[1] * row
        handle = self._handles.get(info.file)
        if handle is None:
            handle = self._handles[info.file] = info.file.open("rb")
        handle.seek(start)
        buffer = bytearray(end - start)
        handle.readinto(buffer)
        if not buffer:
            return torch.empty(shape, dtype=info.dtype)
        return torch.frombuffer(buffer, dtype=info.dtype).view(shape)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


class StreamingWriter:
    """Write tensors in `plan` order into shards of at most `max_shard_bytes` (one tensor may exceed it)."""

    def __init__(
        self, folder: Path, plan: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_bytes: int
    ) -> None:
        shards: list[list[tuple[str, torch.dtype, tuple[int, ...]]]] = [[]]
        size = 0
        for item in plan:
            n = nbytes(item[1], item[2])
            if shards[-1] and size + n > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(item)
            size += n
        count = len(shards)
        names = (
            ["model.safetensors"]
            if count == 1
            else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        self.folder = folder
        self.shards = list(zip(names, shards, strict=True))
        self.weight_map = {item[0]: file for file, items in self.shards for item in items}
        self.order = [item[0] for item in plan]
        self.total_size = sum(nbytes(dtype, shape) for _, dtype, shape in plan)
        self._next = 0
        self._file: BinaryIO | None = None
        self._remaining: list[str] = []

    def write(self, name: str, tensor: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Write one tensor, whole or as its consecutive row blocks (computed one at a time by an iterator)."""
        if name != self.order[self._next]:
            raise ValueError(f"tensor {name!r} written out of order (expected {self.order[self._next]!r})")
        if not self._remaining:
            self._open_next_shard()
        self._remaining.pop(0)
        for part in [tensor] if isinstance(tensor, torch.Tensor) else tensor:
            data = part.detach().contiguous().cpu()
            if data.numel():
                self._file.write(memoryview(data.view(torch.uint8).flatten().numpy()))
        self._next += 1
        if not self._remaining:
            self._file.close()
            self._file = None

    def _open_next_shard(self) -> None:
        file, items = self.shards.pop(0)
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, dtype, shape in items:
            n = nbytes(dtype, shape)
            header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # safetensors pads its header to 8 bytes
        self._file = (self.folder / file).open("wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._remaining = [name for name, _, _ in items]

    def finish(self) -> None:
        if self._next != len(self.order):
            raise ValueError(f"only {self._next} of {len(self.order)} tensors were written")
        if len(set(self.weight_map.values())) > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": self.weight_map}
            (self.folder / INDEX).write_text(json.dumps(index, indent=2))


def copy_model_files(sources: list[Path], out: Path) -> None:
    """Config, generation config, tokenizer and chat template: each from the first source that has it."""
    for name in COPIED:
        for source in sources:
            if (source / name).is_file():
                shutil.copy2(source / name, out / name)
                break


def set_config_dtype(folder: Path, dtype: str) -> None:
    """Record the merged weights' dtype in config.json (transformers reads `dtype`, older ones `torch_dtype`)."""
    file = folder / "config.json"
    if file.is_file():
        config = json.loads(file.read_text())
        config.update({key: dtype for key in ("dtype", "torch_dtype") if key in config} or {"dtype": dtype})
        file.write_text(json.dumps(config, indent=2) + "\n")


def check_output(out: Path, overwrite: bool, where: str) -> None:
    if out.exists() and not overwrite:
        raise UserError(
            f"the merge output {out} already exists",
            where=where,
            fix="choose another output folder, or pass --overwrite (overwrite: true in the config)",
        )


def prepare_output(out: Path, overwrite: bool, where: str) -> Path:
    """A fresh temporary sibling of `out` to write into (renamed into place by `publish`)."""
    check_output(out, overwrite, where)
    tmp = out.parent / f".{out.name}.merging"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
