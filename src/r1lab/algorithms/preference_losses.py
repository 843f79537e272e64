"""Preference losses (DPO family): pure tensor math on per-sequence log-probabilities, one value per pair.

Inputs are `PairLogps`: the summed log-probability of each pair's chosen and rejected response under the
policy (and the reference, for the losses that use one) and their token counts. Every loss returns an (at least) float32
[B] tensor of per-pair losses; the trainer averages them over the pairs of the WHOLE accumulated batch, so
gradient accumulation and extra processes give the large-batch update exactly.

With Δ = (log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r)) and |y| the token count of y:
  sigmoid  DPO: -log σ(βΔ); with label_smoothing ε > 0 conservative DPO (cDPO):
           -(1-ε) log σ(βΔ) - ε log σ(-βΔ)
  robust   robust DPO (rDPO, Chowdhury et al. 2024): (-(1-ε) log σ(βΔ) + ε log σ(-βΔ)) / (1 - 2ε)
  hinge    SLiC: max(0, 1 - βΔ)
  ipo      IPO eq. 17 on length-normalised log-ratios (as TRL, confirmed with the IPO authors):
           (Δc/|c| - Δr/|r| - 1/(2β))²
  simpo    reference-free, length-normalised, target margin γ: -log σ(β (log π(c)/|c| - log π(r)/|r|) - γ)
  orpo     reference-free: NLL(c)/|c| - β log σ(log odds(c) - log odds(r)), odds(y) = p/(1-p), p = π(y)^(1/|y|)
`rpo_alpha` > 0 adds rpo_alpha x NLL(c)/|c| (RPO, Pang et al. 2024) to any of them.

The NLL terms are per pair (a sequence mean of token means): TRL takes one token mean over the batch instead;
the two agree when the chosen responses have equal lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from r1lab.registry import Registry


@dataclass(frozen=True)
class PairLogps:
    """Per-pair sums of response-token log-probs ([B] each) and response token counts."""

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None  # None for the reference-free losses
    ref_rejected: Tensor | None = None

    def logratios(self) -> tuple[Tensor, Tensor]:
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("this preference loss needs the reference log-probs (ref_chosen, ref_rejected)")
        return self.chosen - self.ref_chosen, self.rejected - self.ref_rejected

    def mean_logps(self) -> tuple[Tensor, Tensor]:
        """Length-normalised log-probs: log π(y) / |y|."""
        return self.chosen / self.chosen_tokens.clamp(min=1), self.rejected / self.rejected_tokens.clamp(
            min=1
        )


@dataclass(frozen=True)
class PreferenceParams:
    beta: float = 0.1
    label_smoothing: float = 0.0  # sigmoid (cDPO) and robust only
    simpo_gamma: float = 0.5  # simpo only
    rpo_alpha: float = 0.0  # weight of the chosen NLL term added to any loss


PreferenceLoss = Callable[[PairLogps, PreferenceParams], Tensor]
PREFERENCE_LOSSES: Registry[PreferenceLoss] = Registry("preference loss")
# the losses that never look at a reference model (no reference log-probs are computed for them)
REFERENCE_FREE = frozenset({"simpo", "orpo"})
# which of the PreferenceParams each loss reads besides beta and rpo_alpha (a set value the loss ignores is refused)
READS = {"sigmoid": {"label_smoothing"}, "robust": {"label_smoothing"}, "simpo": {"simpo_gamma"}}


def _up(x: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 log-probs are upcast; float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _delta(logps: PairLogps) -> Tensor:
    chosen, rejected = logps.logratios()
    return _up(chosen - rejected)


@PREFERENCE_LOSSES.register("sigmoid")
def sigmoid(logps: PairLogps, p: PreferenceParams) -> Tensor:
    z = p.beta * _delta(logps)
    eps = p.label_smoothing
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


@PREFERENCE_LOSSES.register("robust")
def robust(logps: PairLogps, p: PreferenceParams) -> Tensor:
    eps = p.label_smoothing
    if not 0 <= eps < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {eps}")
    z = p.beta * _delta(logps)
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


@PREFERENCE_LOSSES.register("hinge")
def hinge(logps: PairLogps, p: PreferenceParams) -> Tensor:
    return torch.relu(1 - p.beta * _delta(logps))


@PREFERENCE_LOSSES.register("ipo")
def ipo(logps: PairLogps, p: PreferenceParams) -> Tensor:
    chosen, rejected = logps.logratios()
    delta = _up(chosen) / logps.chosen_tokens.clamp(min=1) - _up(rejected) / logps.rejected_tokens.clamp(
        min=1
    )
    return (delta - 1 / (2 * p.beta)) ** 2


@PREFERENCE_LOSSES.register("simpo")
def simpo(logps: PairLogps, p: PreferenceParams) -> Tensor:
    chosen, rejected = logps.mean_logps()
    return -F.logsigmoid(p.beta * _up(chosen - rejected) - p.simpo_gamma)


@PREFERENCE_LOSSES.register("orpo")
def orpo(logps: PairLogps, p: PreferenceParams) -> Tensor:
    chosen, rejected = (_up(x) for x in logps.mean_logps())
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    return -chosen - p.beta * F.logsigmoid(log_odds)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Mächler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def preference_loss(name: str, logps: PairLogps, params: PreferenceParams) -> Tensor:
    """The per-pair loss [B] of the named loss, plus the RPO term rpo_alpha x NLL(chosen)/|chosen|."""
    loss = PREFERENCE_LOSSES.get(name)(logps, params)
    if params.rpo_alpha:
        loss = loss - params.rpo_alpha * _up(logps.mean_logps()[0])
    return loss


def implicit_rewards(name: str, logps: PairLogps, beta: float) -> tuple[Tensor, Tensor]:
    """The rewards the loss implicitly assigns to chosen and rejected ([B] each, detached), for logging:
    β log(π/π_ref) with a reference, β x the length-normalised log-prob for the reference-free losses."""
    if name in REFERENCE_FREE:
        chosen, rejected = logps.mean_logps()
    else:
        chosen, rejected = logps.logratios()
    return beta * _up(chosen.detach()), beta * _up(rejected.detach())
