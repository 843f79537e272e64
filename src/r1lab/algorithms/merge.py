"""Merge operators: one tensor of the output from the same-named tensor of each input (registry MERGE_METHODS).

Every operator is called once per tensor with a `MergeInputs` (the inputs' tensors, their weights, the base's,
the layer index) and its method parameters as keyword arguments; the keyword names are the parameters a
config may set for that method (`MergeMethod.params`). Math in float32, returned in float32: the caller casts.
Δ_i = θ_i − θ_base is input i's task vector.

    linear          Σ w_i θ_i, divided by Σ w_i when normalize (model soups)
    task_arithmetic θ_base + Σ w_i Δ_i
    transfer        θ_target + Σ w_i (θ_i − θ_base): a fine-tune's Δ moved to another base of the same shape
    lines           θ_base + λ(l) Σ w_i Δ_i, λ(l) = α + β·l/(L−1); tensors outside the layers get λ = α
    ties            trim each Δ_i to its top density·n entries by |Δ|, elect the sign of Σ w_i Δ̂_i (0 counts +),
                    Σ of the agreeing w_i Δ̂_i, divided by the agreeing Σ w_i when normalize; times `lambda`
    dare            drop each entry of Δ_i with p = 1 − density, survivors × 1/density (the paper's rescale,
                    not mergekit's L1 matching); then as task_arithmetic (seeded: MergeInputs.generator)
    slerp           spherical interpolation of exactly two tensors, t = 0 gives the first (mergekit's rule)
    wise_ft         (1 − α) θ_base + α θ_ft, exactly one fine-tune
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from r1lab.registry import Registry

# `model.layers.3.mlp...` (Llama, Qwen, Gemma), `transformer.h.3...` (GPT-2), `blocks.3` / `layer.3` (others)
LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The transformer block a tensor belongs to, from its name; None for embeddings, head, final norm."""
    found = LAYER_PATTERN.search(name)
    return int(found.group(1)) if found else None


@dataclass
class MergeInputs:
    """One tensor name's worth of inputs. `models` and `weights` line up; base/target only where used."""

    models: list[Tensor]
    weights: list[float]
    base: Tensor | None = None
    target: Tensor | None = None  # transfer: the new base the task vectors are applied to
    layer: int | None = None  # lines: block index of this tensor, None outside the blocks
    num_layers: int = 1  # lines: L
    generator: torch.Generator | None = field(default=None, repr=False)  # dare: the drop masks

    def base32(self) -> Tensor:
        if self.base is None:
            raise ValueError("this merge method needs a base model (the task vectors are θ_i − θ_base)")
        return self.base.float()

    def deltas(self) -> list[Tensor]:
        base = self.base32()
        return [m.float() - base for m in self.models]


@dataclass(frozen=True)
class MergeMethod:
    """An operator and what it needs: a base model, a target base, how many input models."""

    fn: Callable[..., Tensor]
    needs_base: bool
    needs_target: bool = False
    min_models: int = 1
    max_models: int | None = None
    uses_weights: bool = True  # slerp and wise_ft take t / alpha instead of per-model weights
    seeded: bool = False  # dare: random masks from MergeInputs.generator
    elementwise: bool = (
        True  # each output entry depends only on the same entry of the inputs (row blocks work)
    )

    def __call__(self, inputs: MergeInputs, **params: object) -> Tensor:
        return self.fn(inputs, **{KEYWORDS.get(k, k): v for k, v in params.items()})

    @property
    def params(self) -> dict[str, object]:
        """The method's parameters and their defaults (its keyword-only arguments; `lambda_` is `lambda`)."""
        sig = inspect.signature(self.fn).parameters.values()
        return {p.name.rstrip("_"): p.default for p in sig if p.kind is inspect.Parameter.KEYWORD_ONLY}


KEYWORDS = {"lambda": "lambda_"}  # parameter names that are Python keywords


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


def method(name: str, **needs: object) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def add(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        MERGE_METHODS.register(name)(MergeMethod(fn, **needs))  # type: ignore[arg-type]
        return fn

    return add


def _weighted_sum(tensors: list[Tensor], weights: list[float]) -> Tensor:
    return sum((w * t.float() for w, t in zip(weights, tensors, strict=True)), torch.zeros(()))


@method("linear", needs_base=False)
def linear(inputs: MergeInputs, *, normalize: bool = True) -> Tensor:
    total = sum(inputs.weights)
    if normalize and total <= 0:
        raise ValueError(f"linear: the weights sum to {total}; normalising needs a positive sum")
    out = _weighted_sum(inputs.models, inputs.weights)
    return out / total if normalize else out


@method("task_arithmetic", needs_base=True)
def task_arithmetic(inputs: MergeInputs) -> Tensor:
    return inputs.base32() + _weighted_sum(inputs.deltas(), inputs.weights)


@method("transfer", needs_base=True, needs_target=True)
def transfer(inputs: MergeInputs) -> Tensor:
    if inputs.target is None or inputs.target.shape != inputs.base32().shape:
        raise ValueError("transfer: the target base must have the shape of the source base")
    return inputs.target.float() + _weighted_sum(inputs.deltas(), inputs.weights)


@method("lines", needs_base=True)
def lines(inputs: MergeInputs, *, alpha: float = 0.0, beta: float | None = None) -> Tensor:
    """LiNeS; beta None means 1 − alpha (the single-task rule). With L = 1 the only block gets alpha."""
    beta = 1.0 - alpha if beta is None else beta
    if inputs.layer is None:
        scale = alpha
    else:
        scale = alpha + beta * (inputs.layer / (inputs.num_layers - 1) if inputs.num_layers > 1 else 0.0)
    return inputs.base32() + scale * _weighted_sum(inputs.deltas(), inputs.weights)


def trim_top_k(delta: Tensor, density: float) -> Tensor:
    """Keep the max(1, int(density·n)) entries of largest magnitude (mergekit's rounding), zero the rest."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    flat = delta.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k).indices] = True
    return (flat * keep).view_as(delta)


@method("ties", needs_base=True, elementwise=False)
def ties(
    inputs: MergeInputs, *, density: float = 1.0, normalize: bool = True, lambda_: float = 1.0
) -> Tensor:
    if not 0 < density <= 1:
        raise ValueError(f"ties: density must be in (0, 1], got {density}")
    weights = torch.tensor(inputs.weights, dtype=torch.float32)
    trimmed = torch.stack([trim_top_k(d, density) for d in inputs.deltas()])
    weights = weights.view(-1, *([1] * (trimmed.dim() - 1)))
    weighted = trimmed * weights
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(weighted) == elected).float()
    merged = (weighted * agree).sum(0)
    if normalize:
        divisor = (weights * agree).sum(0)
        merged = merged / torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return inputs.base32() + lambda_ * merged


@method("dare", needs_base=True, seeded=True, elementwise=False)
def dare(inputs: MergeInputs, *, density: float = 0.5) -> Tensor:
    if not 0 < density <= 1:
        raise ValueError(f"dare: density (1 − drop probability) must be in (0, 1], got {density}")
    kept = []
    for delta in inputs.deltas():
        mask = torch.rand(delta.shape, generator=inputs.generator) < density
        kept.append(delta * mask / density)
    return inputs.base32() + _weighted_sum(kept, inputs.weights)


@method("slerp", needs_base=False, min_models=2, max_models=2, uses_weights=False, elementwise=False)
def slerp(inputs: MergeInputs, *, t: float = 0.5) -> Tensor:
    v0, v1 = (m.float() for m in inputs.models)
    u0 = v0 / n0 if (n0 := v0.norm()) > 1e-8 else v0
    u1 = v1 / n1 if (n1 := v1.norm()) > 1e-8 else v1
    dot = float((u0 * u1).sum())
    if abs(dot) > 0.9995:
        return (1 - t) * v0 + t * v1
    theta = math.acos(dot)
    return (math.sin((1 - t) * theta) * v0 + math.sin(t * theta) * v1) / math.sin(theta)


@method("wise_ft", needs_base=True, min_models=1, max_models=1, uses_weights=False)
def wise_ft(inputs: MergeInputs, *, alpha: float = 0.5) -> Tensor:
    return (1 - alpha) * inputs.base32() + alpha * inputs.models[0].float()
