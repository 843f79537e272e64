"""Rollouts with transformers on CPU or GPU: our own decode loop over the model's forward and a KV cache.

Per batch of prompts: one left-padded prefill, then the cache is repeated n times (the n samples of a prompt
share its prefill), then one token per live row per step. Rows that finish are dropped from the batch (cache,
mask, positions) so the remaining steps cost less; the loop ends when every row is done.
"""

from __future__ import annotations

import torch
from torch import Tensor

from r1lab.errors import UserError
from r1lab.models.kv_cache import cache_kwarg
from r1lab.rollout.kv_cache import preallocated_cache
from r1lab.rollout.padding import left_pad
from r1lab.rollout.sampling import sample_next
from r1lab.rollout.types import Rollouts, SamplingParams

# Drop finished rows from the batch once this fraction of it is finished (a compaction copies the whole cache,
# so doing it for every single finished row costs more than it saves on short tails).
COMPACT_FRACTION = 0.125


class HFEngine:
    """Generates with the training model itself (weights are shared, so `update_weights` only swaps the handle)."""

    name = "hf"

    def __init__(self, model: torch.nn.Module, tokenizer, *, batch_size: int | None = None, seed: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size  # prompts per prefill; None: all at once
        self.eos_token_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise UserError(
                "the tokenizer has neither a pad nor an EOS token",
                fix="set tokenizer.pad_token before generating",
            )
        self.pad_token_id = int(pad)
        self._seed = seed
        self._generator: torch.Generator | None = None
        self._cache_kwarg = cache_kwarg(model)

    def update_weights(self, model: torch.nn.Module) -> None:
        self.model = model

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        self._check(prompt_ids, n, sampling)
        device = next(self.model.parameters()).device
        generator = self._generator_for(sampling, device)
        step = self.batch_size or max(len(prompt_ids), 1)
        was_training = self.model.training
        self.model.eval()
        try:
            parts = []
            for first in range(0, len(prompt_ids), step):
                chunk = prompt_ids[first : first + step]
                with torch.inference_mode():
                    tokens, logps, lengths, stopped = self._generate_chunk(chunk, n, sampling, generator)
                # clones leave inference mode, so the trainer may use these tensors in autograd
                parts.append(
                    self._to_rollouts(chunk, n, tokens.clone(), logps.clone(), lengths, stopped, sampling)
                )
        finally:
            if was_training:
                self.model.train()
        if not parts:
            empty = torch.zeros((0, 0), dtype=torch.long)
            return Rollouts([], [], empty, empty.clone(), empty.float(), [], [], self.pad_token_id)
        return Rollouts.concat(parts, index_offsets=range(0, len(prompt_ids), step))

    # ------------------------------------------------------------------------------------------ internals

    def _generate_chunk(
        self, prompts: list[list[int]], n: int, sampling: SamplingParams, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns tokens [R, T], logprobs [R, T], lengths [R], stopped [R] for R = len(prompts) * n rows."""
        device = next(self.model.parameters()).device
        prompt_len = max(len(p) for p in prompts)
        max_new = sampling.max_new_tokens
        ids, mask = left_pad(prompts, self.pad_token_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        cache = preallocated_cache(self.model.config, prompt_len + max_new)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: cache},
        )
        logits = out.logits[:, -1].repeat_interleave(n, dim=0)
        cache.batch_repeat_interleave(n)
        rows = len(prompts) * n
        # per live slot of the batch: its row, its attention mask (prompt + room for every new token), next position
        slot_rows = torch.arange(rows, device=device)
        slot_mask = torch.cat([mask, torch.ones((len(prompts), max_new), dtype=torch.long, device=device)], 1)
        slot_mask = slot_mask.repeat_interleave(n, dim=0)
        slot_pos = (positions[:, -1] + 1).repeat_interleave(n)
        slot_live = torch.ones(rows, dtype=torch.bool, device=device)

        tokens = torch.full((rows, max_new), self.pad_token_id, dtype=torch.long, device=device)
        logps = torch.zeros((rows, max_new), dtype=torch.float32, device=device)
        lengths = torch.zeros(rows, dtype=torch.long, device=device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=device)
        eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=device)
        # tokens decoded to look for a stop string: a stop string of k characters spans at most k + 1 tokens
        stop_window = max((len(s) for s in sampling.stop), default=0) + 3

        for t in range(max_new):
            new, new_logp = sample_next(logits, sampling, generator)
            new = new.masked_fill(~slot_live, self.pad_token_id)  # finished slots still in the batch
            live_rows = slot_rows[slot_live]
            tokens[live_rows, t] = new[slot_live]
            logps[live_rows, t] = new_logp[slot_live]
            lengths[live_rows] = t + 1
            done = slot_live & torch.isin(new, eos)
            if sampling.stop:
                done |= self._hit_stop(tokens, slot_rows, slot_live & ~done, t, stop_window, sampling.stop)
            stopped[slot_rows[done]] = True
            slot_live &= ~done
            n_live = int(slot_live.sum())
            if n_live == 0 or t == max_new - 1:
                break
            if len(slot_rows) - n_live >= max(1, int(COMPACT_FRACTION * len(slot_rows))):
                keep = slot_live.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                slot_rows, slot_mask, slot_pos, new = (
                    slot_rows[keep],
                    slot_mask[keep],
                    slot_pos[keep],
                    new[keep],
                )
                slot_live = slot_live[keep]
            out = self.model(
                input_ids=new.unsqueeze(-1),
                attention_mask=slot_mask[:, : prompt_len + t + 1],
                position_ids=(slot_pos + t).unsqueeze(-1),
                use_cache=True,
                **{self._cache_kwarg: cache},
            )
            logits = out.logits[:, -1]
        width = int(lengths.max().item()) if rows else 0
        return tokens[:, :width].cpu(), logps[:, :width].cpu(), lengths.cpu(), stopped.cpu()

    def _hit_stop(
        self, tokens: Tensor, slot_rows: Tensor, check: Tensor, t: int, window: int, stops: tuple[str, ...]
    ) -> Tensor:
        """Slots whose latest tokens complete a stop string."""
        hit = torch.zeros_like(check)
        slots = check.nonzero().squeeze(-1).tolist()
        if not slots:
            return hit
        tails = tokens[slot_rows[slots], max(0, t + 1 - window) : t + 1].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
        for slot, text in zip(slots, texts, strict=True):
            hit[slot] = any(s in text for s in stops)
        return hit

    def _to_rollouts(
        self,
        prompts: list[list[int]],
        n: int,
        tokens: Tensor,
        logps: Tensor,
        lengths: Tensor,
        stopped: Tensor,
        sampling: SamplingParams,
    ) -> Rollouts:
        mask = torch.arange(tokens.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        tokens = tokens.masked_fill(~mask, self.pad_token_id)
        texts = self.tokenizer.batch_decode(
            [row[:length] for row, length in zip(tokens.tolist(), lengths.tolist(), strict=True)],
            skip_special_tokens=True,
        )
        return Rollouts(
            prompt_index=[i for i in range(len(prompts)) for _ in range(n)],
            prompt_ids=[list(p) for p in prompts for _ in range(n)],
            completion_ids=tokens,
            completion_mask=mask.long(),
            logprobs=logps.masked_fill(~mask, 0.0),
            finish_reasons=["stop" if s else "length" for s in stopped.tolist()],
            texts=[_cut_at_stop(text, sampling.stop) for text in texts],
            pad_token_id=self.pad_token_id,
        )

    def _generator_for(self, sampling: SamplingParams, device: torch.device) -> torch.Generator:
        if sampling.seed is not None:
            return torch.Generator(device=device).manual_seed(sampling.seed)
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self._seed)
        return self._generator

    def _check(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> None:
        if n < 1:
            raise UserError(f"n must be at least 1, got {n}", where="rollout.n", fix="set rollout.n >= 1")
        for i, p in enumerate(prompt_ids):
            if len(p) == 0:
                raise UserError(f"prompt {i} is empty (0 tokens)", fix="drop empty prompts from the data")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        longest = max((len(p) for p in prompt_ids), default=0)
        if limit and longest + sampling.max_new_tokens > limit:
            raise UserError(
                f"the longest prompt ({longest} tokens) + max_new_tokens ({sampling.max_new_tokens}) exceeds the "
                f"model's context of {limit} tokens",
                where="rollout.max_new_tokens / data.max_length",
                fix="lower rollout.max_new_tokens or data.max_length (shorter prompts)",
            )


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """End the text right after the first stop string (kept, so e.g. a format reward still sees it)."""
    ends = [i + len(s) for s in stops if (i := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


def _eos_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    if extra is not None:
        ids.update(int(i) for i in (extra if isinstance(extra, (list, tuple)) else [extra]))
    return sorted(ids)
