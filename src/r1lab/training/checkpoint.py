"""Atomic, resumable checkpoints: `<output_dir>/checkpoints/step-N/`.

A checkpoint folder holds the model in HF format (written by `r1lab.models.save_model`: safetensors, or the
LoRA adapter for a peft model) plus the trainer state needed to continue bit-for-bit:
`trainer_state.pt` (optimizer, scheduler, the RNG states of every rank; loaded with weights_only=True) and
`trainer_state.json` (step, data position and whatever the loop adds). Everything is written into a hidden
temporary folder that is renamed into place at the end, so a crash never leaves a half checkpoint; a folder
without `trainer_state.json` is ignored. Only rank 0 writes; every rank reads.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from r1lab.errors import UserError
from r1lab.models import save_model
from r1lab.models.load import RESIDUAL_ADAPTER_FILE
from r1lab.training.distributed import gather_objects
from r1lab.training.fsdp import gathered_model, is_sharded, load_sharded, save_sharded
from r1lab.training.rundir import write_state

STATE_FILE = "trainer_state.pt"
META_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain lists and tensors (so weights_only loading accepts them)."""
    py_version, py_state, py_gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    output_dir: str | Path,
    step: int,
    meta: dict[str, Any] | None = None,
    save_total_limit: int | None = None,
) -> Path:
    """Write `checkpoints/step-<step>/` atomically (collective: call it on every rank). Returns its path."""
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step}"
    rng_all = gather_objects(rng_state())  # one entry per rank, in rank order
    tmp = root / f".step-{step}.tmp"
    sharded = is_sharded(model)
    if sharded:  # FSDP2: every rank writes its shard of weights and optimizer state into the temporary folder
        on_main(accelerator, lambda: shutil.rmtree(tmp, ignore_errors=True))
        save_sharded(model, optimizer, tmp)

    def write() -> None:
        root.mkdir(parents=True, exist_ok=True)
        if not sharded:
            shutil.rmtree(tmp, ignore_errors=True)
        with disk_full_guard(output_dir, tmp, checkpoint_bytes(model, optimizer), f"checkpoint step-{step}"):
            if sharded:
                tokenizer.save_pretrained(tmp)
            else:
                save_model(accelerator.unwrap_model(model), tokenizer, tmp)
            state = {"scheduler": scheduler.state_dict(), "rng": rng_all}
            if not sharded:
                state["optimizer"] = optimizer.state_dict()
            torch.save(state, tmp / STATE_FILE)
            info = {"step": step, "world_size": accelerator.num_processes, "sharded": sharded, **(meta or {})}
            (tmp / META_FILE).write_text(json.dumps(info, indent=2))
        if final.exists():  # the same step saved again (e.g. an interrupt right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, save_total_limit)

    on_main(accelerator, write)
    return final


def save_final(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: Any,
    output_dir: str | Path,
    *,
    merge_lora: bool,
) -> Path:
    """Write `<output_dir>/final/` (collective: call it on every rank); returns the folder a next stage loads
    (`final/merged` for a merged LoRA). A full disk is a DiskFull error, as for a checkpoint."""
    final = Path(output_dir) / "final"
    # FSDP2: the full weights gathered onto rank 0, in an unsharded copy of the model (one merged folder)
    full = gathered_model(model, accelerator.is_main_process) if is_sharded(model) else None

    def write() -> Path:
        inner = full if full is not None else accelerator.unwrap_model(model)
        # save_model writes a temporary sibling and removes it when it fails; `final` is replaced only at the end
        with disk_full_guard(
            output_dir, None, checkpoint_bytes(inner, None) * (2 if merge_lora else 1), "final/"
        ):
            return save_model(inner, tokenizer, final, merge_lora=merge_lora)

    return Path(on_main(accelerator, write))


class DiskFull(UserError):
    """A checkpoint or the final model did not fit on the disk (its partial folder is removed)."""


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """About what a checkpoint takes on disk: the weights save_model writes (the trainable ones for a LoRA
    adapter) plus the optimizer's state tensors."""
    inner = getattr(model, "module", model)
    if isinstance(inner, PeftModel):
        tensors = [p for p in inner.parameters() if p.requires_grad]
    else:
        tensors = list({t.data_ptr(): t for t in inner.state_dict().values()}.values())  # tied weights once
    total = sum(t.numel() * t.element_size() for t in tensors)
    if optimizer is not None:
        for state in optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


@contextmanager
def disk_full_guard(output_dir: str | Path, partial: Path | None, needed: int, what: str) -> Iterator[None]:
    """Turn "No space left on device" while writing `what` into one DiskFull error: remove the `partial`
    folder, mark state.json failed with the reason, and say where and how much space it needs."""
    try:
        yield
    except Exception as e:
        folder = Path(output_dir)
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
        if not _is_disk_full(e, free, needed):
            raise
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        free = shutil.disk_usage(folder).free  # with the partial files gone
        reason = f"no space left on device while writing {what} in {folder}"
        with contextlib.suppress(OSError):
            write_state(folder, "failed", reason=reason, needed_bytes=needed, free_bytes=free)
        latest = find_latest_checkpoint(folder)
        raise DiskFull(
            f"{reason}: it needs about {_size(needed)}, {_size(free)} is free there",
            where=str(folder),
            fix="free space on that disk (or set train.output_dir on a larger one, or lower "
            "train.save_total_limit) and run again with --resume; "
            + (
                f"the last complete checkpoint, {latest.name}, is intact"
                if latest
                else "no checkpoint was kept"
            ),
        ) from None


def _is_disk_full(error: Exception, free: int, needed: int) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    if "No space left on device" in text or "os error 28" in text:  # safetensors' SafetensorError
        return True
    # torch.save's zip writer reports only "unexpected pos ..." or "file write failed": judge by the space left
    return isinstance(error, RuntimeError) and free < needed


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def on_main(accelerator: Accelerator, fn: Callable[[], Any]) -> Any:
    """Run `fn` on the main process only; every rank returns its result, or raises the UserError it raised
    (so the other ranks do not wait forever at the next collective)."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except UserError as e:
            error = (type(e).__name__, e.what, e.where, e.fix)
    result, error = gather_objects((result, error))[0]
    if error is not None:
        kind, what, where, fix = error
        raise (DiskFull if kind == "DiskFull" else UserError)(what, where=where, fix=fix)
    return result


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / META_FILE).is_file() and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_checkpoint(
    path: str | Path,
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """Restore model weights, optimizer, scheduler and this rank's RNG state; return the saved meta dict.
    (`r1lab.training.resume.restore` first checks that the run agrees with the checkpoint.)"""
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if is_sharded(model):
        load_sharded(model, optimizer, path)
    else:
        if meta.get("sharded"):
            raise UserError(
                f"checkpoint {path} was written by an FSDP2 run (sharded weights)",
                where="train.distributed",
                fix="resume with train.distributed: fsdp2 on the same number of processes",
            )
        load_weights(path, accelerator.unwrap_model(model))
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"][accelerator.process_index])
    return meta


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load the weights `save_model` wrote in `path` into `model` in place (full model or LoRA adapter)."""
    if isinstance(model, PeftModel):
        residual = path / RESIDUAL_ADAPTER_FILE  # a pissa/olora/corda adapter as trained (see save_model)
        file = residual if residual.is_file() else path / "adapter_model.safetensors"
        result = set_peft_model_state_dict(model, load_file(file))
        unexpected = result.unexpected_keys
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise UserError(
                f"no safetensors weights in checkpoint {path}", fix="delete this checkpoint folder"
            )
        tensors: dict[str, torch.Tensor] = {}
        for file in files:
            tensors.update(load_file(file))
        result = model.load_state_dict(_own_names(model, tensors), strict=False)
        unexpected = result.unexpected_keys
        tied = {k for k in result.missing_keys if k.endswith("lm_head.weight")}
        if set(result.missing_keys) - tied:
            raise UserError(
                f"checkpoint {path} lacks weights {sorted(result.missing_keys)[:3]}...",
                fix="it was written for another model; resume with the same model config",
            )
    if unexpected:
        raise UserError(
            f"checkpoint {path} has weights this model lacks: {sorted(unexpected)[:3]}...",
            fix="resume with the same model (and LoRA) config that wrote it",
        )


def _own_names(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` under the model's own parameter names: transformers saves some models (LLaVA) under their
    original checkpoint names (save_pretrained's save_original_format), which load_state_dict does not know."""
    own = model.state_dict()
    if tensors.keys() <= own.keys():
        return tensors
    from transformers.core_model_loading import revert_weight_conversion

    first = {t.data_ptr(): name for name, t in reversed(own.items())}  # a tied tensor: its first name
    saved = {name: first.get(t.data_ptr()) for name, t in revert_weight_conversion(model, dict(own)).items()}
    return {saved.get(k) or k: v for k, v in tensors.items()}


def _prune(root: Path, keep: int | None) -> None:
    if keep is None:
        return
    for old in list_checkpoints(root.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
