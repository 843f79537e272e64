"""Cross-rank helpers, the one place the training loops talk to the process group (one process: no-ops).

`world()` is (rank, world_size); `reduce_sum` sums a tensor over ranks, `all_reduce_sum` many scalars in one
collective; `gather_objects` gives every rank's picklable object, in rank order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of `tensor` over ranks, as a new tensor (the tensor itself on one process)."""
    if world()[1] == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def all_reduce_sum(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sum each scalar tensor over ranks (stacked: one collective)."""
    if world()[1] == 1 or not values:
        return values
    keys = sorted(values)
    stacked = reduce_sum(torch.stack([values[k].detach().float().reshape(()) for k in keys]))
    return dict(zip(keys, stacked.unbind(), strict=True))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (pickled over the process group)."""
    _, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out
