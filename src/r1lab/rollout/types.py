"""What every rollout engine takes and returns: sampling settings, the `Rollouts` batch, training rows.

Row layout: `generate(prompts, n, ...)` returns n rows per prompt, grouped and in prompt order
(rows 0..n-1 are prompt 0), so `prompt_index` doubles as the group id of the advantage estimators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from r1lab.config import RolloutConfig
from r1lab.rollout.padding import concat_prompt_completion


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. Filters apply in this order, after dividing the logits by the temperature:
    top_k, then top_p (on the renormalised top-k), then min_p. temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # stop strings, besides the EOS tokens
    seed: int | None = None  # None: continue the engine's own random stream

    @classmethod
    def from_config(cls, cfg: RolloutConfig, *, seed: int | None = None) -> SamplingParams:
        return cls(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            min_p=cfg.min_p,
            max_new_tokens=cfg.max_new_tokens,
            stop=tuple(cfg.stop),
            seed=seed,
        )

    @classmethod
    def greedy(cls, max_new_tokens: int = 256, stop: Sequence[str] = ()) -> SamplingParams:
        return cls(temperature=0.0, max_new_tokens=max_new_tokens, stop=tuple(stop))


@dataclass
class Rollouts:
    """Completions of one generation batch. Tensors are on the CPU (cheap to gather across ranks);
    `training_rows(..., device=)` moves a micro-batch to the model's device.

    `logprobs` are those of the sampling policy: log_softmax(logits / temperature) at the sampled token, before
    any top-k/top-p/min-p filtering (as TRL computes them), 0 where the mask is 0. For greedy decoding
    (temperature 0) they are taken at temperature 1. A completion ending on EOS or a stop string keeps that
    token in `completion_ids` and in the mask; `texts` drop special tokens and end right after a stop string.

    `completion_mask` is the attention mask of the completion (1 on every real token); `loss_mask` marks the
    tokens trained on (loss, KL, entropy, token counts). They differ for multi-turn episodes, whose tool-result
    tokens are attended to but not trained on (0 in `loss_mask`); left unset, `loss_mask` is `completion_mask`.
    `extras`: per-row metadata of an episode engine (tool-call counts, the whole episode's text), or None.
    """

    prompt_index: list[int]  # row -> index into the prompt list given to generate
    prompt_ids: list[list[int]]  # per row
    completion_ids: Tensor  # LongTensor[N, T], right-padded with pad_token_id
    completion_mask: Tensor  # [N, T], 1 on generated tokens
    logprobs: Tensor  # float32 [N, T]
    finish_reasons: list[str]  # "stop" (EOS or stop string) | "length" (max_new_tokens reached)
    texts: list[str]
    pad_token_id: int = 0
    loss_mask: Tensor | None = None  # [N, T], a subset of completion_mask; None: completion_mask itself
    extras: list[dict[str, Any]] | None = None  # per row

    def __post_init__(self) -> None:
        if self.loss_mask is None:
            self.loss_mask = self.completion_mask

    def __len__(self) -> int:
        return len(self.prompt_index)

    @property
    def num_tokens(self) -> int:
        """Generated tokens (the model's own: tool results and padding excluded)."""
        return int(self.loss_mask.sum().item())

    @property
    def completion_lengths(self) -> list[int]:
        """The model's own tokens per row (for an episode, summed over its turns)."""
        return self.loss_mask.sum(-1).long().tolist()

    def select(self, indices: Sequence[int]) -> Rollouts:
        """The given rows (e.g. the groups dynamic sampling keeps), with padding columns no row needs dropped."""
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.completion_ids.device)
        mask = self.completion_mask[idx]
        width = int(mask.sum(-1).max().item()) if len(idx) else 0
        return Rollouts(
            prompt_index=[self.prompt_index[i] for i in indices],
            prompt_ids=[self.prompt_ids[i] for i in indices],
            completion_ids=self.completion_ids[idx, :width],
            completion_mask=mask[:, :width],
            logprobs=self.logprobs[idx, :width],
            finish_reasons=[self.finish_reasons[i] for i in indices],
            texts=[self.texts[i] for i in indices],
            pad_token_id=self.pad_token_id,
            loss_mask=self.loss_mask[idx, :width],
            extras=None if self.extras is None else [self.extras[i] for i in indices],
        )

    @staticmethod
    def concat(parts: Sequence[Rollouts], index_offsets: Sequence[int] | None = None) -> Rollouts:
        """Stack the rows of several batches. `index_offsets[i]` is added to part i's prompt_index, so the
        result indexes the concatenation of the prompt lists (None: prompt_index kept as it is)."""
        if not parts:
            raise ValueError("concat needs at least one Rollouts")
        offsets = list(index_offsets) if index_offsets is not None else [0] * len(parts)
        width = max(p.completion_ids.shape[1] for p in parts)
        pad = parts[0].pad_token_id

        def widen(t: Tensor, value: float) -> Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

        return Rollouts(
            prompt_index=[i + off for p, off in zip(parts, offsets, strict=True) for i in p.prompt_index],
            prompt_ids=[ids for p in parts for ids in p.prompt_ids],
            completion_ids=torch.cat([widen(p.completion_ids, pad) for p in parts]),
            completion_mask=torch.cat([widen(p.completion_mask, 0) for p in parts]),
            logprobs=torch.cat([widen(p.logprobs, 0.0) for p in parts]),
            finish_reasons=[r for p in parts for r in p.finish_reasons],
            texts=[t for p in parts for t in p.texts],
            pad_token_id=pad,
            loss_mask=torch.cat([widen(p.loss_mask, 0) for p in parts]),
            extras=None
            if all(p.extras is None for p in parts)
            else [e for p in parts for e in (p.extras or [{} for _ in range(len(p))])],
        )


@dataclass
class TrainingRows:
    """Prompt + completion rows ready for a forward pass that recomputes the completion log-probs.

    Prompts are left-padded and completions right-padded, so every completion starts at `completion_start`:

        out = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask,
                    position_ids=rows.position_ids, logits_to_keep=rows.completion_ids.shape[1] + 1)
        logits = out.logits[:, :-1]   # the logits that predict each completion token
        logp = token_logprobs(logits, rows.completion_ids, temperature)
    """

    input_ids: Tensor  # [B, P + T]
    attention_mask: Tensor  # [B, P + T]
    position_ids: Tensor  # [B, P + T], counting real tokens only (as the engine saw them)
    completion_ids: Tensor  # [B, T]
    completion_mask: Tensor  # [B, T]
    logprobs: Tensor  # [B, T] of the sampling policy (pi_old)
    completion_start: int  # = P


def training_rows(
    rollouts: Rollouts, indices: Sequence[int] | None = None, device: torch.device | str | None = None
) -> TrainingRows:
    """Build the rows for the RL forward pass, for all rollouts or a micro-batch of them (`indices`),
    trimmed to the longest prompt and completion among those rows."""
    part = rollouts if indices is None else rollouts.select(indices)
    dev = device if device is not None else part.completion_ids.device
    completion_ids, completion_mask = part.completion_ids.to(dev), part.completion_mask.to(dev)
    input_ids, attention_mask, position_ids = concat_prompt_completion(
        part.prompt_ids, completion_ids, completion_mask, part.pad_token_id
    )
    return TrainingRows(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=part.logprobs.to(dev),
        completion_start=input_ids.shape[1] - completion_ids.shape[1],
    )


class RolloutEngine(Protocol):
    """A generation engine. The HF engine generates with the training model itself; an engine holding its own
    copy of the weights (vLLM) must be sent them with `update_weights` after every optimizer step."""

    name: str

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts: ...

    def update_weights(self, model: torch.nn.Module) -> None: ...
