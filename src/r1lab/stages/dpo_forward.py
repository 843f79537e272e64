"""The DPO forward: summed response log-probs of both sides of each pair, the prompt run once per pair.

A micro-batch of pairs becomes the rows [chosen 0, rejected 0, chosen 1, ...] of a `Rollouts` whose two rows
of a pair share a prompt index, so RL's `completion_logprobs` runs each prompt once, indexes its key/value
cache out to both responses, and applies the output head to the response tokens only (no [B, T, V] logits).
The math and the gradient are those of the plain forward over [prompt | response] per row.

Reference log-probs come from the same function without a second model in memory: `reference_logps`
computes them for the whole dataset in one no-grad pass before training (cached in the run folder as
`reference_logps.safetensors`, reused on resume), or, with LoRA, the loop runs `pair_logps` with the
adapter disabled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from r1lab.rollout.types import Rollouts
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.training.distributed import gather_objects

REFERENCE_FILE = "reference_logps.safetensors"


def pair_rows(examples: list[dict[str, list[int]]], pad_token_id: int) -> tuple[Rollouts, Tensor]:
    """Rows [chosen, rejected] per pair sharing one prompt, and the score mask [2B, T] (1 on the response
    tokens whose log-prob counts)."""
    responses = [
        (ex[f"{side}_ids"], ex[f"{side}_mask"]) for ex in examples for side in ("chosen", "rejected")
    ]
    width = max(len(ids) for ids, _ in responses)
    ids = torch.full((len(responses), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(responses), width), dtype=torch.long)
    score = torch.zeros((len(responses), width), dtype=torch.float32)
    for row, (tokens, scored) in enumerate(responses):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        score[row, : len(tokens)] = torch.tensor(scored, dtype=torch.float32)
    rows = Rollouts(
        prompt_index=[i // 2 for i in range(len(responses))],
        prompt_ids=[ex["prompt_ids"] for ex in examples for _ in range(2)],
        completion_ids=ids,
        completion_mask=mask,
        logprobs=torch.zeros(ids.shape),
        finish_reasons=["stop"] * len(responses),
        texts=[""] * len(responses),
        pad_token_id=pad_token_id,
    )
    return rows, score


def pair_logps(
    model: Any, prefix_model: Any, examples: list[dict[str, list[int]]], pad_token_id: int, device: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(chosen, rejected) summed log-probs [B] (differentiable) and their token counts [B]."""
    rows, score = pair_rows(examples, pad_token_id)
    logp, _ = completion_logprobs(model, prefix_model, rows, device, 1.0)
    score = score.to(logp.device)
    sums, counts = (logp * score).sum(-1), score.sum(-1)
    return sums[0::2], sums[1::2], counts[0::2], counts[1::2]


@torch.no_grad()
def reference_logps(
    model: Any, dataset: list[dict[str, list[int]]], pad_token_id: int, accelerator: Any, batch_size: int
) -> Tensor:
    """[N, 2] (chosen, rejected) log-probs of every pair under `model` (unwrapped, eval mode, no grad),
    sharded over the ranks and gathered, so every rank holds the whole table."""
    was_training = model.training
    model.eval()
    mine = list(range(accelerator.process_index, len(dataset), accelerator.num_processes))
    values: dict[int, tuple[float, float]] = {}
    for start in range(0, len(mine), batch_size):
        ids = mine[start : start + batch_size]
        with accelerator.autocast():
            chosen, rejected, _, _ = pair_logps(
                model, model, [dataset[i] for i in ids], pad_token_id, accelerator.device
            )
        values.update(zip(ids, zip(chosen.tolist(), rejected.tolist(), strict=True), strict=True))
    model.train(was_training)
    table = torch.zeros(len(dataset), 2, dtype=torch.float32)
    for part in gather_objects(values):
        for i, pair in part.items():
            table[i] = torch.tensor(pair)
    return table


def dataset_fingerprint(dataset: list[dict[str, list[int]]], model_path: str) -> str:
    """What the cached reference log-probs depend on: the model and the token ids of every pair, in order."""
    digest = hashlib.sha256(model_path.encode())
    for ex in dataset:
        digest.update(json.dumps([ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"]]).encode())
    return digest.hexdigest()


def load_cached_reference(out: Path, fingerprint: str) -> Tensor | None:
    """The cached table when it was computed for this model and data, else None."""
    path = out / REFERENCE_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        if (f.metadata() or {}).get("fingerprint") != fingerprint:
            return None
    return load_file(path)["logps"]


def save_reference(out: Path, table: Tensor, fingerprint: str) -> None:
    """Write the table atomically (a crash never leaves a half file that a resume would trust)."""
    tmp = out / f".{REFERENCE_FILE}.tmp"
    save_file({"logps": table.contiguous()}, tmp, metadata={"fingerprint": fingerprint})
    os.replace(tmp, out / REFERENCE_FILE)
