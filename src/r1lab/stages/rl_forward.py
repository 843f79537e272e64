"""The policy forward of the RL update: log-probs of every completion token, each distinct prompt run once.

The G completions of a prompt share it, so the prompt goes through the model once and its key/value cache is
indexed out to every row; the completions then run on top of it. The math (and the gradient, which flows into
the prompt's activations from all G rows) is that of the plain forward over [prompt | completion] per row,
with G-1 of every G prompt computations removed: for 8 completions of 64 tokens after a 70-token prompt,
45% fewer tokens through the model. With gradient checkpointing (which turns the cache off) it falls back to
the plain forward.

The output head does not run inside the model: its inputs are captured and `linear_logprobs` applies it to
the completion tokens only, a chunk at a time (no [B, T, V] logits). Models whose logits are more than
head(hidden) (soft-capping, scaling, a LoRA-wrapped head) are detected once and take the plain logits path.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from r1lab.algorithms.linear_logprobs import linear_logprobs
from r1lab.algorithms.logprobs import entropy_from_logits, token_logprobs
from r1lab.models.kv_cache import cache_kwarg
from r1lab.rollout.padding import left_pad
from r1lab.rollout.types import Rollouts, training_rows
from r1lab.training.fsdp import is_sharded


def completion_logprobs(
    model: Any, prefix_model: Any, rows: Rollouts, device: Any, temperature: float, entropy_grad: bool = False
) -> tuple[Tensor, Tensor]:
    """Log-probs (differentiable) and entropies (detached unless `entropy_grad`, for an entropy bonus) of each
    row's completion tokens: float32 [B, T], 0 where the loss mask is 0 (padding, and an episode's tool results:
    attended to, never scored, so the head does not run on them).

    `model` runs the completion tokens (the DDP-wrapped module, so the gradient is synchronised);
    `prefix_model` runs the shared prompts (the same module unwrapped: DDP allows one forward per backward).
    """
    completion = rows.completion_ids.to(device)
    mask = rows.loss_mask.to(device).bool()
    head = output_head(prefix_model)
    if head is None:
        logits = completion_features(model, prefix_model, rows, device, head=None)
        logp = token_logprobs(logits, completion, temperature)
        if entropy_grad:  # keeps a float32 copy of the logits for the backward
            entropy = entropy_from_logits(logits, temperature)
        else:
            with torch.no_grad():
                entropy = entropy_from_logits(logits.detach(), temperature)
        return logp * mask, entropy * mask
    hidden = completion_features(model, prefix_model, rows, device, head=head)
    logp, entropy = linear_logprobs(hidden[mask], head.weight, head.bias, completion[mask], temperature)
    entropy = entropy if entropy_grad else entropy.detach()
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=device)
    return zeros.masked_scatter(mask, logp), zeros.masked_scatter(mask, entropy)


def completion_features(
    model: Any, prefix_model: Any, rows: Rollouts, device: Any, head: torch.nn.Linear | None
) -> Tensor:
    """[B, T, D] whose position t predicts completion token t: the logits (D = V) when `head` is None, else
    the inputs of the output head (D = hidden size), which is then not run."""
    # FSDP2: every call of a sharded layer is a collective, so one forward per micro-batch on every rank
    if _checkpointing(prefix_model) or is_sharded(prefix_model):
        return _plain(model, rows, device, head)
    prompt_of = {p: i for i, p in enumerate(dict.fromkeys(rows.prompt_index))}
    first_row = {p: r for r, p in reversed(list(enumerate(rows.prompt_index)))}
    prompts = [rows.prompt_ids[first_row[p]] for p in prompt_of]
    index = torch.tensor([prompt_of[p] for p in rows.prompt_index], device=device)

    lengths = rows.completion_mask.sum(-1).tolist()
    ids, mask = left_pad(prompts, rows.pad_token_id, device)
    first, out = _run(
        prefix_model if max(lengths) > 1 else model,  # DDP needs a wrapped forward; here the only one
        head,
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    first = first[:, -1][index]  # the last prompt position predicts completion token 0
    cache = out["cache"] if "cache" in out else out.past_key_values  # noqa: SIM401 (lazy: old name warns)
    prefix = _prefix_states(cache)
    # rows of similar length run together, so short completions are not padded to the longest one; this
    # needs the prefix cache re-indexed per bucket (plain layers only), else all rows run as one bucket
    buckets = length_buckets(lengths) if prefix is not None else [list(range(len(rows)))]
    width = rows.completion_ids.shape[1]
    cache_name = cache_kwarg(prefix_model)
    parts = []
    for i, bucket in enumerate(buckets):
        at = torch.tensor(bucket, device=device)
        cache_rows = index[at]  # the prompt of each row of the bucket
        t = max(1, max(lengths[r] for r in bucket))
        rest = first.new_zeros(len(bucket), 0, first.shape[-1])
        if t > 1:
            if prefix is None:
                cache.reorder_cache(cache_rows)  # index_select per layer: differentiable
            else:
                for layer, (keys, values) in zip(cache.layers, prefix, strict=True):
                    layer.keys, layer.values = keys[cache_rows], values[cache_rows]
            rest = _completion_forward(
                model if i == len(buckets) - 1 else prefix_model,  # DDP: one wrapped forward per backward
                head,
                {cache_name: cache},
                mask[cache_rows],
                rows.completion_ids[bucket, : t - 1].to(device),
                rows.completion_mask[bucket, : t - 1].to(device),
            )
        part = torch.cat([first[at].unsqueeze(1), rest], dim=1)
        parts.append(torch.nn.functional.pad(part, (0, 0, 0, width - t)))
    order = torch.tensor([r for bucket in buckets for r in bucket], device=device)
    return torch.cat(parts).index_select(0, torch.argsort(order))


def _completion_forward(
    model: Any,
    head: torch.nn.Linear | None,
    cache: dict[str, Any],
    prompt_mask: Tensor,
    tokens: Tensor,
    token_mask: Tensor,
) -> Tensor:
    """Features of `tokens` run on top of the prompt cache (one cache row per token row); `cache` is the
    forward's keyword argument for it, {"cache" or "past_key_values": the cache}."""
    lengths = prompt_mask.sum(-1, keepdim=True)
    features, _ = _run(
        model,
        head,
        input_ids=tokens,
        attention_mask=torch.cat([prompt_mask, token_mask.long()], dim=1),
        position_ids=lengths + torch.arange(tokens.shape[1], device=tokens.device),
        use_cache=True,
        logits_to_keep=0,  # every position
        **cache,
    )
    return features


def _prefix_states(cache: Any) -> list[tuple[Tensor, Tensor]] | None:
    """Each layer's prompt keys and values, when every layer is a plain DynamicLayer (which a later forward
    extends by concatenation, leaving these tensors as they are); None for other cache kinds."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


BUCKET_OVERHEAD = 128  # tokens: what one more forward (and its backward) costs, roughly, on a CPU


def length_buckets(lengths: list[int], overhead: int | None = None) -> list[list[int]]:
    """Row indices grouped by length, shortest bucket first, for the fewest padded tokens when each extra
    bucket (one more forward) costs as much as `overhead` tokens; exact by dynamic programming over the rows
    sorted by length."""
    overhead = BUCKET_OVERHEAD if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]
    best = [0.0] + [math.inf] * len(order)  # best[j]: cost of the first j sorted rows
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * ordered[end - 1] + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    buckets, end = [], len(order)
    while end:
        buckets.append(order[cut[end] : end])
        end = cut[end]
    return buckets[::-1]


def _plain(model: Any, rows: Rollouts, device: Any, head: torch.nn.Linear | None) -> Tensor:
    full = training_rows(rows, device=device)
    t = full.completion_ids.shape[1]
    features, _ = _run(
        model,
        head,
        input_ids=full.input_ids[:, :-1],
        attention_mask=full.attention_mask[:, :-1],
        position_ids=full.position_ids[:, :-1],
        logits_to_keep=t,
        use_cache=False,
    )
    return features


def _run(model: Any, head: torch.nn.Linear | None, **inputs: Any) -> tuple[Tensor, Any]:
    """The model's forward; returns (logits, or the head's inputs when `head` is given, and the output)."""
    if head is None:
        out = model(**inputs)
        return out.logits, out
    with _head_skipped(head) as captured:
        out = model(**inputs)
    return captured[0], out


@contextmanager
def _head_skipped(head: torch.nn.Module) -> Iterator[list[Tensor]]:
    """Within: the output head gets an empty input (no logits computed) and its real input is captured."""
    captured: list[Tensor] = []

    def keep_input(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        captured.append(args[0])
        return (args[0][..., :0, :], *args[1:])

    handle = head.register_forward_pre_hook(keep_input)
    try:
        yield captured
    finally:
        handle.remove()


_HEADS: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Linear | None] = weakref.WeakKeyDictionary()


def output_head(model: Any) -> torch.nn.Linear | None:
    """The model's output layer when its logits are exactly head(hidden states), else None.

    Checked once per model, so architectures that post-process the logits (Gemma's soft-capping, Cohere's and
    Granite's scaling) or wrap the head (LoRA on lm_head) keep the plain path.
    """
    if model in _HEADS:
        return _HEADS[model]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or not _logits_are_head_outputs(model, head):
        head = None
    _HEADS[model] = head
    return head


def _logits_are_head_outputs(model: Any, head: torch.nn.Linear) -> bool:
    """A 4-token forward whose head inputs are scaled up 100x: large logits expose soft-capping, and any
    rescaling of the logits shows at every size."""
    probe: list[Tensor] = []

    def amplify(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        probe.append(args[0] * 100.0)
        return (probe[-1], *args[1:])

    was_training = model.training
    model.eval()  # dropout would make the two computations differ
    handle = head.register_forward_pre_hook(amplify)
    try:
        with torch.no_grad():
            ids = torch.arange(1, 5, device=head.weight.device).unsqueeze(0)
            logits = model(input_ids=ids, use_cache=False).logits
        handle.remove()
        with torch.no_grad():
            return torch.allclose(head(probe[0]).float(), logits.float(), rtol=1e-4, atol=1e-4)
    finally:
        handle.remove()
        model.train(was_training)


def _checkpointing(model: Any) -> bool:
    # transformers 5.x renamed is_gradient_checkpointing (deprecated) to is_activation_checkpointing
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(getattr(model, "base_model", None), name):
            return bool(getattr(model, name))
    return False
