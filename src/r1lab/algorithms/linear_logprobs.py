"""Token log-probs straight from hidden states: the output head, log-softmax and gather fused per chunk.

The plain way runs the head over every position of the batch ([B, T, V] logits, 0.8 GB in float32 for
64 x 64 tokens at V = 49k), then log-softmax, gather and entropy each pass over that tensor again, and autograd
keeps it (and a copy) for the backward. Here the head runs only on the positions that are trained on (padding
is skipped), a chunk of positions at a time; the forward keeps just the log-sum-exp per position, and the
backward recomputes each chunk's logits (one extra head matmul) to form
d logp(y) / d logits = onehot(y) - softmax, then the gradients of the hidden states and the head weight.
The recompute costs a third more head FLOPs; the saving is every full pass over [B, T, V] and, since the
head is a fifth of a small model's FLOPs, the head work on padding.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from r1lab.algorithms.logprobs import CHUNK, _check_temperature


def linear_logprobs(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    temperature: float = 1.0,
    chunk: int = CHUNK,
) -> tuple[Tensor, Tensor]:
    """log_softmax((hidden @ weight.T + bias) / temperature) at `labels`, and the entropy of that distribution.

    hidden [N, H], weight [V, H], bias [V] or None, labels [N] -> (logp, entropy), both float32 [N]. logp is
    differentiable w.r.t. hidden, weight and bias, and so is the entropy (for an entropy bonus; its backward
    work is done only when the entropy is part of the loss).
    """
    _check_temperature(temperature)
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} must be [N, H] with labels [N], got {tuple(labels.shape)}"
        )
    return _LinearLogprobs.apply(hidden, weight, bias, labels, temperature, chunk)


def _scaled_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float) -> Tensor:
    z = torch.nn.functional.linear(hidden, weight, bias).float()
    return z if temperature == 1.0 else z.div_(temperature)


def _autocast_state(device_type: str) -> tuple[str, torch.dtype] | None:
    if torch.is_autocast_enabled(device_type):
        return device_type, torch.get_autocast_dtype(device_type)
    return None


class _LinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        temperature: float,
        chunk: int,
    ) -> tuple[Tensor, Tensor]:
        n = hidden.shape[0]
        logp = hidden.new_empty(n, dtype=torch.float32)
        entropy = torch.empty_like(logp)
        lse = torch.empty_like(logp)
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            z = _scaled_logits(hidden[part], weight, bias, temperature)
            top = z.amax(-1, keepdim=True)
            z.sub_(top)  # z - max: exp cannot overflow
            target = z.gather(-1, labels[part, None]).squeeze(-1)
            p = z.exp()
            total = p.sum(-1)
            log_total = total.log()
            logp[part] = target - log_total
            lse[part] = top.squeeze(-1) + log_total
            # H = log Σe^z - Σ p z (both on the shifted z)
            entropy[part] = log_total - p.mul_(z).sum(-1) / total
        ctx.save_for_backward(hidden, weight, bias, labels, lse, entropy)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.amp = _autocast_state(hidden.device.type)  # the backward matmuls run as the forward ones did
        ctx.set_materialize_grads(False)  # an output outside the loss gets grad None, not zeros
        return logp, entropy

    @staticmethod
    def backward(
        ctx: Any, grad_logp: Tensor | None, grad_entropy: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, labels, lse, entropy = ctx.saved_tensors
        if grad_logp is None:
            grad_logp = torch.zeros_like(lse)
        t = ctx.temperature
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        amp = torch.autocast(*ctx.amp) if ctx.amp else nullcontext()
        with amp:
            for start in range(0, hidden.shape[0], ctx.chunk):
                part = slice(start, start + ctx.chunk)
                # d logp / d z = onehot(y) - softmax(z), times the incoming gradient, over the temperature;
                # d H / d z = -p (log p + H), for an entropy in the loss
                log_p = _scaled_logits(hidden[part], weight, bias, t).sub_(lse[part, None])
                gl = grad_logp[part].float()
                if grad_entropy is None:
                    g = log_p.exp_().mul_(-gl[:, None])
                else:
                    ge = grad_entropy[part].float()[:, None]
                    coef = (log_p + entropy[part, None]).mul_(ge).add_(gl[:, None])
                    g = log_p.exp_().mul_(coef).neg_()
                g.scatter_add_(-1, labels[part, None], gl[:, None])
                if t != 1.0:
                    g.div_(t)
                g_cast = g.to(weight.dtype)
                if need_h:
                    grad_h[part] = (g_cast @ weight).to(hidden.dtype)
                if need_w:
                    grad_w += (g_cast.T @ hidden[part].to(weight.dtype)).float()
                if need_b:
                    grad_b += g.sum(0)
        return (
            grad_h,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
            None,
            None,
            None,
        )
