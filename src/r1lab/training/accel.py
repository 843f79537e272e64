"""Accelerator set-up shared by every training loop: precision check, seeding, rank helpers.

One code path for one process and for many: `torchrun` / `accelerate launch` set the rank environment and
`Accelerator` picks DDP (gloo on CPU, NCCL on GPU) from it.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState

from r1lab.config import ModelConfig, TrainConfig
from r1lab.errors import UserError

_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here (CUDA capability, or AVX512-BF16/AMX on CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return device.type in ("xpu", "mps")


def resolve_precision(precision: str, device: torch.device, *, where: str = "train.precision") -> str:
    """Map the configured precision to one that runs here ("auto" -> bf16 where supported, else fp32).

    Raises UserError for a precision this hardware cannot autocast to.
    """
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise UserError(
            "fp16 mixed precision needs a GPU; this run is on CPU",
            where=where,
            fix="use train.precision=bf16 (if the CPU supports it), fp32, or auto",
        )
    if precision == "bf16" and not bf16_supported(device):
        raise UserError(
            f"this {device.type.upper()} has no native bf16 support",
            where=where,
            fix="use train.precision=fp32 or auto",
        )
    return precision


def check_model_dtype(model_cfg: ModelConfig, device: torch.device) -> None:
    """Reject weight dtypes that cannot be trained on this hardware (fp16 weights on CPU)."""
    if model_cfg.dtype == "float16" and device.type == "cpu":
        raise UserError(
            "training float16 weights on CPU is not supported (no fp16 kernels for the backward pass)",
            where="model.dtype",
            fix="use model.dtype=float32 (with train.precision=bf16 for speed) or bfloat16",
        )
    if model_cfg.dtype == "bfloat16" and not bf16_supported(device):
        raise UserError(
            f"this {device.type.upper()} has no native bf16 support", where="model.dtype", fix="use float32"
        )


def build_accelerator(train: TrainConfig, model: ModelConfig | None = None) -> tuple[Accelerator, str]:
    """Build the Accelerator for a run and return it with the resolved precision ("fp32" | "bf16" | "fp16").

    Gradient accumulation is done by the loop itself (it needs the global token count), so the
    Accelerator is built with gradient_accumulation_steps=1.
    """
    # accelerate only forms a multi-process CPU (gloo) group when told cpu=True; GPUs are found by themselves.
    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    device = PartialState(cpu=cpu).device
    precision = resolve_precision(train.precision, device)
    if model is not None:
        check_model_dtype(model, device)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != _MIXED[precision] and PartialState().num_processes == 1:
        # A pipeline runs several stages in one process; accelerate keeps precision in a process-wide
        # singleton, so a later stage with another precision must clear it first.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    accelerator = Accelerator(cpu=cpu, mixed_precision=_MIXED[precision], step_scheduler_with_optimizer=False)
    return accelerator, precision


def prepare_model(accelerator: Accelerator, model: torch.nn.Module, train: TrainConfig) -> torch.nn.Module:
    """The model ready to train: accelerate's DDP wrapper (one process: just on the device), or with
    train.distributed fsdp2 on several processes sharded by FSDP2 (`r1lab.training.fsdp`). Build the
    optimizer from the model this returns."""
    if train.distributed == "fsdp2":
        from r1lab.training.fsdp import check_shardable, shard_model

        check_shardable(model)  # refused on one process too, so a config does not fail only when scaled up
        if accelerator.num_processes > 1:
            model = shard_model(model, accelerator.device)
            if accelerator.mixed_precision != "no":  # what accelerate.prepare does for DDP: autocast forwards
                model.forward = accelerator.autocast()(model.forward)
            return model
    return accelerator.prepare(model)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) identically on every rank."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_main_process() -> bool:
    """True on global rank 0 (also before any Accelerator exists)."""
    return int(os.environ.get("RANK", "0")) == 0
