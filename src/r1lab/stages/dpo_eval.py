"""The DPO stage's per-batch log-probs and metrics, and its held-out evaluation.

A batch of pairs gets the policy's summed response log-probs and the reference's: a row of the precomputed
table, the same model with its LoRA adapter off (on line), or none (the reference-free losses). The held-out
pairs (data.eval_path or data.eval_fraction) are scored the same way without gradients, every
train.eval_every steps and after the last one, and logged as eval/loss, eval/rewards/{chosen, rejected,
margins, accuracies} and eval/logps/{chosen, rejected}: means over all held-out pairs, as the training
metrics are means over a step's pairs. Their reference log-probs are precomputed with the training pairs' (one
table, cached in the run folder, reused on resume).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from r1lab.algorithms.preference_losses import PairLogps, PreferenceParams, implicit_rewards, preference_loss
from r1lab.stages.dpo_forward import pair_logps
from r1lab.training.distributed import reduce_sum

# summed over the pairs of a step (or of the held-out set), then divided by their number
SUMMED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
SUMMED += ("logps/chosen", "logps/rejected")


def batch_logps(
    model: Any,
    inner: Any,
    examples: list[dict[str, list[int]]],
    pad_id: int,
    accelerator: Any,
    reference_rows: Tensor | None,
    online_reference: bool,
) -> PairLogps:
    """Policy log-probs of the pairs (through `model`, prompts through `inner`) with their reference:
    `reference_rows` [B, 2] from the table, else (online_reference) `inner` with its adapter disabled."""
    chosen, rejected, n_chosen, n_rejected = pair_logps(model, inner, examples, pad_id, accelerator.device)
    ref: tuple[Tensor | None, Tensor | None] = (None, None)
    if reference_rows is not None:
        table = reference_rows.to(chosen.device)
        ref = (table[:, 0], table[:, 1])
    elif online_reference:  # LoRA: the base model is the policy with its adapter off
        with torch.no_grad(), inner.disable_adapter(), accelerator.autocast():
            ref = pair_logps(inner, inner, examples, pad_id, accelerator.device)[:2]
    return PairLogps(chosen, rejected, n_chosen, n_rejected, *ref)


def pair_sums(loss: str, logps: PairLogps, losses: Tensor, beta: float) -> Tensor:
    """The SUMMED metrics of a batch's pairs, each summed over the pairs [len(SUMMED)]."""
    good, bad = implicit_rewards(loss, logps, beta)
    per_pair = [
        losses.detach(),
        good,
        bad,
        good - bad,
        (good > bad).float(),
        logps.chosen.detach(),
        logps.rejected.detach(),
    ]
    return torch.stack([x.float().sum() for x in per_pair])


@torch.no_grad()
def evaluate_pairs(
    model: Any,
    pairs: list[dict[str, list[int]]],
    reference: Tensor | None,
    online_reference: bool,
    loss: str,
    params: PreferenceParams,
    accelerator: Any,
    pad_id: int,
    batch_size: int,
) -> dict[str, float]:
    """eval/* means over the held-out `pairs` (sharded over the ranks, summed across them); `reference` is
    their [N, 2] reference table or None."""
    inner = accelerator.unwrap_model(model)  # no DDP hooks: ranks may run different numbers of batches
    was_training = inner.training
    inner.eval()
    mine = list(range(accelerator.process_index, len(pairs), accelerator.num_processes))
    sums = torch.zeros(len(SUMMED), device=accelerator.device)
    for start in range(0, len(mine), batch_size):
        ids = mine[start : start + batch_size]
        rows = None if reference is None else reference[torch.tensor(ids)]
        with accelerator.autocast():
            logps = batch_logps(
                inner, inner, [pairs[i] for i in ids], pad_id, accelerator, rows, online_reference
            )
            sums += pair_sums(loss, logps, preference_loss(loss, logps, params), params.beta).to(sums.device)
    inner.train(was_training)
    values = (reduce_sum(sums) / len(pairs)).tolist()
    return {f"eval/{name}": value for name, value in zip(SUMMED, values, strict=True)}
