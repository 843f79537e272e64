"""UDS (Utility-Diversity aware online batch selection) scores: pure tensor math, no state.

score = ||Z||_* + alpha * mean_q ||s - q||_2, where Z [L, V] are one example's logits at its target positions
(utility: the nuclear norm, the sum of singular values), s its sketch and q the sketches of the recently selected
examples in the FIFO queue (diversity; the term is 0 while the queue is empty).
"""

from __future__ import annotations

import torch


def count_sketch(x: torch.Tensor, buckets: torch.Tensor, signs: torch.Tensor, dim: int) -> torch.Tensor:
    """A Count Sketch of x [..., V] into `dim` coordinates: coordinate j sums signs[v] * x[v] over the v with
    buckets[v] = j (L2 norms are kept in expectation; nothing V x dim is stored)."""
    out = torch.zeros(*x.shape[:-1], dim, dtype=torch.float32, device=x.device)
    return out.index_add_(-1, buckets.to(x.device), x.float() * signs.to(x.device))


def uds_scores(
    logits: list[torch.Tensor], sketches: torch.Tensor, queue: torch.Tensor, alpha: float
) -> torch.Tensor:
    """One score per example: logits[i] [L_i, V] (an example without targets scores -inf), sketches [B, d],
    queue [Q, d] (Q may be 0)."""
    utility = torch.stack(
        [
            torch.linalg.matrix_norm(z.float(), ord="nuc") if len(z) else torch.tensor(float("-inf"))
            for z in logits
        ]
    ).to(sketches.device)
    if not len(queue):
        return utility
    return utility + alpha * torch.cdist(sketches.float(), queue.float().to(sketches.device)).mean(dim=1)
