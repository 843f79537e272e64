"""Deterministic data order, one for SFT examples and RL prompts: a seeded permutation per epoch.

The order is a pure function of (seed, epoch), so a checkpoint only needs the step (SFT: `batch(step)`, cut
into global batches) or the stream position (RL: `at(position)`, prompt by prompt across epochs) to resume the
exact sequence; `position(step)` gives the (epoch, batch-in-epoch) a step is stored as.
"""

from __future__ import annotations

import torch

from r1lab.errors import UserError


class EpochOrder:
    """Global batches of `global_batch` dataset indices; an epoch's incomplete tail batch is dropped
    (it holds different examples every epoch, since each epoch is reshuffled)."""

    def __init__(self, size: int, global_batch: int, seed: int, *, shuffle: bool = True) -> None:
        if size < global_batch:
            raise UserError(
                f"the dataset has {size} examples, fewer than one global batch ({global_batch} = "
                "batch_size x grad_accum x processes)",
                where="train.batch_size / train.grad_accum",
                fix="lower train.batch_size or train.grad_accum, or add data",
            )
        self.size, self.global_batch, self.seed, self.shuffle = size, global_batch, seed, shuffle
        self.steps_per_epoch = size // global_batch
        self._epoch, self._perm = -1, torch.arange(size)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            self._epoch = epoch
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perm = torch.randperm(self.size, generator=gen)
        return self._perm

    def at(self, position: int) -> int:
        """Dataset index at `position` of the endless stream of epochs (epoch = position // size)."""
        epoch, i = divmod(position, self.size)
        return int(self.permutation(epoch)[i])

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of the batch used by optimizer step `step` (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def batch(self, step: int) -> list[int]:
        epoch, pos = self.position(step)
        start = pos * self.global_batch
        return self.permutation(epoch)[start : start + self.global_batch].tolist()


def shard(
    indices: list[int], lengths: list[int], *, rank: int, world: int, micro_batch: int
) -> list[list[int]]:
    """This rank's micro-batches of a global batch: every world-th index, sorted by length so that the
    sequences batched together pad little (the step's loss is normalised globally, so grouping is free)."""
    mine = sorted(indices[rank::world], key=lambda i: lengths[i])
    return [mine[i : i + micro_batch] for i in range(0, len(mine), micro_batch)]
