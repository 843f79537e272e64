"""`uds:` of the SFT stage (UDS, Utility-Diversity aware online batch selection): before each optimizer step, every
micro-batch row is scored in a no-grad forward (r1lab.algorithms.uds: nuclear norm of its target logits + alpha x
mean distance of its logit sketch to a FIFO queue of the last `queue` selected rows), and only the top `keep` rows
of each micro-batch go on to the forward + backward; their sketches are enqueued.

The sketch: the mean of the row's target logits over positions, count-sketched into `sketch_dim` coordinates
(seeded by train.seed; ALGORITHMS.md: "a ~1,024-dim random sketch of the logits", the projection unpublished).
The queue is per process and saved in every checkpoint (`uds-rank<R>.queue`: safetensors under another suffix,
as the checkpoint loader reads every *.safetensors as weights), so resume continues it.
Cost: one extra no-grad forward per micro-batch row and one SVD of its L x V target logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from r1lab.algorithms.sft_losses import IGNORE_INDEX
from r1lab.algorithms.uds import count_sketch, uds_scores
from r1lab.config import UDSConfig


def target_logits(
    model: Any, batch: dict[str, torch.Tensor], targets: torch.Tensor, device: Any
) -> torch.Tensor:
    """Logits [K, V] of the positions that have a target, row by row; the LM head runs on those only."""
    keep = F.pad(targets != IGNORE_INDEX, (0, 1), value=False)  # [B, T]: positions whose logits we need
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    return model(**inputs, logits_to_keep=keep.to(device), use_cache=False).logits


class UDSSelector:
    """The queue and the sketch of one process; `select` filters a step's micro-batches."""

    def __init__(self, cfg: UDSConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed
        self.queue: torch.Tensor | None = None  # [Q, d], d = min(sketch_dim, V) once V is seen
        self.buckets = self.signs = torch.zeros(0)
        self.kept = self.seen = 0  # rows since the last `take_rate`

    def _hash(self, vocab: int) -> int:
        """The Count Sketch's seeded bucket and sign of every vocabulary entry (drawn at the first call)."""
        dim = min(self.cfg.sketch_dim, vocab)
        if len(self.buckets) != vocab:
            g = torch.Generator().manual_seed(self.seed)
            self.buckets = torch.randint(0, dim, (vocab,), generator=g)
            self.signs = torch.randint(0, 2, (vocab,), generator=g).float() * 2 - 1
        if self.queue is None:
            self.queue = torch.zeros(0, dim)
        return dim

    @torch.no_grad()
    def select(
        self, model: Any, batches: list[dict[str, torch.Tensor]], targets: list[torch.Tensor], device: Any
    ) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
        out_batches, out_targets = [], []
        for batch, target in zip(batches, targets, strict=True):
            logits = target_logits(model, batch, target, device)
            dim = self._hash(logits.shape[-1])
            rows = list(torch.split(logits, (target != IGNORE_INDEX).sum(dim=1).tolist()))
            means = torch.stack(
                [z.float().mean(dim=0) if len(z) else z.new_zeros(z.shape[-1]).float() for z in rows]
            )
            sketches = count_sketch(means, self.buckets, self.signs, dim).cpu()
            queue = self.queue if self.queue is not None else sketches[:0]
            scores = uds_scores(rows, sketches, queue, self.cfg.alpha)
            top = sorted(torch.argsort(scores, descending=True, stable=True)[: self.cfg.keep].tolist())
            self.queue = torch.cat([queue, sketches[top]])[-self.cfg.queue :]
            self.kept, self.seen = self.kept + len(top), self.seen + len(rows)
            index = torch.tensor(top)
            out_batches.append({k: v[index] for k, v in batch.items()})
            out_targets.append(target[index])
        return out_batches, out_targets

    def take_rate(self) -> float:
        """Fraction of rows kept since the last call (logged as uds_kept)."""
        rate = self.kept / max(self.seen, 1)
        self.kept = self.seen = 0
        return rate

    def save(self, checkpoint: Path, rank: int) -> None:
        if self.queue is not None:
            save_file({"queue": self.queue.contiguous()}, str(Path(checkpoint) / f"uds-rank{rank}.queue"))

    def load(self, checkpoint: Path, rank: int) -> bool:
        """Continue the queue a checkpoint saved; False when it has none (a run without uds: start empty)."""
        file = Path(checkpoint) / f"uds-rank{rank}.queue"
        if file.exists():
            self.queue = load_file(str(file))["queue"]
        return file.exists()
