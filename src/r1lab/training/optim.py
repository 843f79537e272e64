"""AdamW and the learning-rate schedules (linear warmup, then cosine / linear / constant down to min_lr_ratio)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from r1lab.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and norm weights (1-D tensors) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel is much faster on CPU and GPU; it needs every parameter on one floating dtype/device kind.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused
    )


def num_warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    return cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)


def lr_factor(step: int, *, warmup: int, total: int, kind: str, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr for the update made at `step` (0-based).

    Warmup rises linearly to 1 over `warmup` steps (the first update uses 1/warmup, never 0); then
    "cosine"/"linear" decay to `min_lr_ratio` at `total`, "constant" stays at 1.
    """
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> LambdaLR:
    warmup = num_warmup_steps(cfg, total_steps)

    def factor(step: int) -> float:
        return lr_factor(
            step, warmup=warmup, total=total_steps, kind=cfg.scheduler, min_lr_ratio=cfg.min_lr_ratio
        )

    return LambdaLR(optimizer, factor)
