"""Masked Thought (MFT, "Masked Thought: Simply Masking Partial Reasoning Steps Can Improve Mathematical Reasoning
Learning of Language Models"): in the SFT *input*, response tokens are replaced at rate p(step); the labels keep
the original tokens, so the model learns to predict each step with parts of the earlier reasoning hidden.

p(step) = min(p_max, p_max * step / (warmup_fraction * total_steps + 1)), step = the optimizer step about to
run (0 at the first). The replacement is one mask token (the paper's MATH script adds a `<mask>` token) or, with
`replace_with: random`, a uniformly random vocabulary token (its GSM8K script). Which positions are masked is
drawn from a generator seeded by (train.seed, step, rank, micro-batch), so a resumed run masks the same
positions as a straight one.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from r1lab.config import MaskThoughtConfig
from r1lab.data.tokenize import IGNORE
from r1lab.errors import UserError


def mask_rate(step: int, total_steps: int, p_max: float, warmup_fraction: float) -> float:
    """The share of response tokens masked at optimizer step `step` (0-based) of `total_steps`."""
    return min(p_max, p_max * step / (warmup_fraction * total_steps + 1))


def mask_token_id(cfg: MaskThoughtConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[int, str]:
    """(id, token) of the replacement: `cfg.token`, else the tokenizer's mask token, else unk, else pad."""
    if cfg.token is not None:
        ids = tokenizer.convert_tokens_to_ids([cfg.token])
        if ids[0] is None or (ids[0] == tokenizer.unk_token_id and cfg.token != tokenizer.unk_token):
            raise UserError(
                f"mask_thought.token {cfg.token!r} is not one token of this tokenizer's vocabulary",
                where="mask_thought.token",
                fix="name an existing (special) token, or remove the key to use the tokenizer's mask/unk/pad",
            )
        return int(ids[0]), cfg.token
    for token, token_id in (
        (tokenizer.mask_token, tokenizer.mask_token_id),
        (tokenizer.unk_token, tokenizer.unk_token_id),
        (tokenizer.pad_token, tokenizer.pad_token_id),
    ):
        if token is not None and token_id is not None:
            return int(token_id), str(token)
    raise UserError(  # load_tokenizer always sets a pad token, so only a hand-built tokenizer gets here
        "the tokenizer has no mask, unk or pad token to mask thoughts with",
        where="mask_thought.token",
        fix="set mask_thought.token, or mask_thought.replace_with: random",
    )


def mask_inputs(
    batch: dict[str, torch.Tensor],
    rate: float,
    generator: torch.Generator,
    *,
    mask_id: int | None,
    vocab_size: int,
) -> dict[str, torch.Tensor]:
    """A copy of `batch` whose response tokens (labels != -100) are replaced in `input_ids` with probability
    `rate`: by `mask_id`, or by uniform random ids below `vocab_size` when `mask_id` is None. Labels unchanged."""
    ids = batch["input_ids"]
    draw = torch.rand(ids.shape, generator=generator)
    masked = (batch["labels"] != IGNORE) & (draw < rate)
    if mask_id is None:
        replacement = torch.randint(0, vocab_size, ids.shape, generator=generator)
    else:
        replacement = torch.full_like(ids, mask_id)
    return {**batch, "input_ids": torch.where(masked, replacement, ids)}


class ThoughtMasker:
    """Masks each micro-batch of a step, as `cfg` says, reproducibly from (seed, step, rank, micro-batch)."""

    def __init__(
        self, cfg: MaskThoughtConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int, total_steps: int
    ) -> None:
        self.cfg, self.seed, self.total_steps = cfg, seed, total_steps
        self.vocab_size = len(tokenizer)
        self.mask_id, self.token = (
            (None, None) if cfg.replace_with == "random" else mask_token_id(cfg, tokenizer)
        )

    def describe(self) -> str:
        what = "random vocabulary tokens" if self.mask_id is None else f"{self.token!r} (id {self.mask_id})"
        return (
            f"masked thought: response tokens replaced by {what}, rate rising to {self.cfg.p_max} "
            f"over the first {self.cfg.warmup_fraction:.0%} of training"
        )

    def rate(self, step: int) -> float:
        return mask_rate(step, self.total_steps, self.cfg.p_max, self.cfg.warmup_fraction)

    def __call__(
        self, batches: list[dict[str, torch.Tensor]], step: int, rank: int
    ) -> list[dict[str, torch.Tensor]]:
        out = []
        for i, batch in enumerate(batches):
            seed = int(np.random.SeedSequence([self.seed, step, rank, i]).generate_state(1)[0])
            generator = torch.Generator().manual_seed(seed)
            out.append(
                mask_inputs(
                    batch, self.rate(step), generator, mask_id=self.mask_id, vocab_size=self.vocab_size
                )
            )
        return out
