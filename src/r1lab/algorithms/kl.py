"""Per-token estimators of KL(π_θ || π_ref) from sampled tokens (Schulman, "Approximating KL divergence").

With log r = ref_logp - logp (tokens sampled from π_θ):
- `k1`: -log r            unbiased, high variance, can be negative
- `k2`: (log r)^2 / 2     biased, low variance, always >= 0
- `k3`: r - log r - 1     unbiased, low variance, always >= 0 (GRPO's choice)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from r1lab.registry import Registry

KLFn = Callable[[Tensor, Tensor], Tensor]
KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")

# exp() of a log-ratio above this overflows float16/bfloat16 ranges quickly; such tokens carry no
# trustworthy signal anyway, so k3 clamps the log-ratio (as verl does) instead of returning inf/NaN.
MAX_LOG_RATIO = 20.0


@KL_ESTIMATORS.register("k1")
def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    return 0.5 * (logp - ref_logp).square()


@KL_ESTIMATORS.register("k3")
def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    log_r = (ref_logp - logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.exp(log_r) - log_r - 1


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL estimate, same shape as `logp`; gradient flows through `logp` only (ref is detached)."""
    return KL_ESTIMATORS.get(estimator)(logp, ref_logp.detach())
