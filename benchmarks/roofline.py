"""The decode roofline of a causal LM on this machine: its FLOPs per generation and the measured peaks.

FLOPs count the work a generation needs, not the work an engine happens to do (an engine that prefills a
prompt once per sample does more, and is charged only for the once):

- a decode step of a batch whose rows attend to `contexts` keys each:
  2 x linear_params x batch (every nn.Linear, output head included) + 4 x layers x attn_width x sum(contexts)
  (q·k over the context and the weighted sum of v, per query head of width head_dim; attn_width = heads x
  head_dim);
- the prefill of a prompt of L tokens: 2 x (linear_params - head_params) x L + 2 x head_params (the output head
  only at the last position) + causal attention 2 x layers x attn_width x L x (L + 1);
- T new tokens of a prompt = its prefill (which gives the first token) + T - 1 decode steps, step k attending to
  L + k keys.

The peak is the best of a few timed fp32 GEMMs (torch.mm, square, n = 2048 by default) on torch's threads; the
memory figure is a timed copy of a large tensor (bytes read + bytes written).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    linear_params: int  # weights of every nn.Linear (output head included)
    head_params: int  # the output head's weights
    layers: int
    attn_width: int  # query heads x head_dim


def model_shape(model: torch.nn.Module) -> Shape:
    cfg = model.config
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    head = model.get_output_embeddings()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return Shape(
        linear_params=sum(m.weight.numel() for m in linears),
        head_params=head.weight.numel(),
        layers=cfg.num_hidden_layers,
        attn_width=cfg.num_attention_heads * head_dim,
    )


def decode_step_flops(shape: Shape, contexts: list[int]) -> int:
    """One decode step of len(contexts) rows, row i attending to contexts[i] keys (its own included)."""
    return 2 * shape.linear_params * len(contexts) + 4 * shape.layers * shape.attn_width * sum(contexts)


def prefill_flops(shape: Shape, length: int) -> int:
    body = 2 * (shape.linear_params - shape.head_params) * length + 2 * shape.head_params
    return body + 2 * shape.layers * shape.attn_width * length * (length + 1)


def generation_flops(shape: Shape, prompt_lens: list[int], n: int, new_tokens: int) -> dict[str, int]:
    """Each prompt prefilled once, then n rows per prompt decoding new_tokens - 1 steps."""
    decode = sum(
        decode_step_flops(shape, [length + k for length in prompt_lens for _ in range(n)])
        for k in range(1, new_tokens)
    )
    prefill = sum(prefill_flops(shape, length) for length in prompt_lens)
    return {"prefill": prefill, "decode": decode, "total": prefill + decode}


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of the fastest of `repeats` n x n x n GEMMs (after one warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def memory_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s of the fastest copy of a `mib` MiB fp32 tensor (read + write)."""
    src = torch.randn(mib * 2**18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best
