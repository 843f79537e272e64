"""The objectives beside ppo_clip (gspo, cispo, sapo, gpg / reinforce) on hand-computed cases, and for every
objective: micro-batch accumulation gives the full-batch loss and gradient (1 x 8 == 8 x 1)."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.policy_losses import LOSS_AGGS, POLICY_LOSSES, LossTotals, compute_policy_loss

# row 0, A = +1; row 1, A = -2 (its third token masked out); old_logp = 0, so logp = log ρ
RATIOS = torch.tensor([[1.5, 0.5, 1.0], [1.1, 0.7, 2.0]])
ADV = torch.tensor([1.0, -2.0])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
TOTALS = LossTotals(tokens=5, sequences=2, max_completion_length=4)


def loss(name: str, logp: torch.Tensor, adv: torch.Tensor = ADV, agg: str = "token_mean", **kw):
    kw.setdefault("eps_low", None)
    kw.setdefault("eps_high", None)
    return compute_policy_loss(name, logp, torch.zeros(2, 3), adv, MASK, loss_agg=agg, totals=TOTALS, **kw)


def grad_of(name: str, logp: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor, dict]:
    logp = logp.clone().requires_grad_()
    value, metrics = loss(name, logp, **kw)
    (grad,) = torch.autograd.grad(value, logp)
    return value.detach(), grad, metrics


# ---- gspo: one length-normalised ratio per sequence, clipped as a whole

# row 0: log ρ = [0.3, -0.1, 0.1] -> s = e^0.1 = 1.105 > 1 + 0.05: clipped (A > 0), loss -1.05, no gradient
# row 1: log ρ = [0.2, -0.4] (+ a masked 5.0 that must not count) -> s = e^-0.1 = 0.905 > 1 - 0.1: inside
GSPO_LOGP = torch.tensor([[0.3, -0.1, 0.1], [0.2, -0.4, 5.0]])


def test_gspo_hand_computed():
    s1 = math.exp(-0.1)
    value, grad, m = grad_of("gspo", GSPO_LOGP, agg="seq_mean_token_mean", eps_low=0.1, eps_high=0.05)
    assert value.item() == pytest.approx((-1.05 + 2 * s1) / 2)
    # row 1: d(-s A)/d logp_t = -A s (the token form's gradient); x 1/2 tokens x 1/2 sequences
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, 0.0], [s1 / 2, s1 / 2, 0.0]]))
    assert {k: round(float(v), 4) for k, v in m.items()} == {
        "clip_low": 0.0, "clip_high": 3.0, "clip_region": 3.0, "ratio": round(3 * math.exp(0.1) + 2 * s1, 4),
        "tokens": 5.0,
    }  # fmt: skip


@pytest.mark.parametrize("eps", [(0.1, 0.05), (3e-4, 4e-4), (0.5, 0.5)])
def test_gspo_token_equals_the_sequence_loss_in_value_and_gradient(eps):
    """GSPO's own sequence form, -mean_i min(s_i A_i, clip(s_i) A_i), written directly with autograd."""
    g = torch.Generator().manual_seed(1)
    logp = (torch.randn(2, 3, generator=g) * 0.02).requires_grad_()
    s = torch.exp((logp * MASK).sum(-1) / MASK.sum(-1))
    reference = -torch.min(s * ADV, s.clamp(1 - eps[0], 1 + eps[1]) * ADV).mean()
    (want,) = torch.autograd.grad(reference, logp)
    value, got, _ = grad_of("gspo", logp.detach(), agg="seq_mean_token_mean", eps_low=eps[0], eps_high=eps[1])
    torch.testing.assert_close(value, reference.detach())
    torch.testing.assert_close(got, want)


def test_gspo_takes_per_token_advantages():
    adv = torch.tensor([[1.0, -1.0, 0.0], [2.0, 0.5, 9.0]])
    value, _, m = grad_of("gspo", GSPO_LOGP, adv=adv, agg="token_mean", eps_low=0.1, eps_high=0.05)
    s0, s1 = math.exp(0.1), math.exp(-0.1)
    # row 0: A = 1 clipped to 1.05 (-1.05); A = -1: -min(-s0, -1.05) = s0; A = 0: 0. row 1 inside the band
    assert value.item() == pytest.approx((-1.05 + s0 + 0 - 2 * s1 - 0.5 * s1) / 5)
    assert m["clip_high"].item() == 1.0


# ---- cispo: the weight is clipped and detached; every token keeps its gradient


def test_cispo_hand_computed():
    logp = RATIOS.log()
    value, grad, m = grad_of("cispo", logp, eps_low=1.0, eps_high=0.28)  # no lower bound, weight <= 1.28
    weights = torch.tensor([[1.28, 0.5, 1.0], [1.1, 0.7, 1.28]])
    per_token = -weights * ADV[:, None] * logp
    assert value.item() == pytest.approx(float((per_token * MASK).sum() / 5))
    # d/dlogp = -w A: non-zero on the clipped tokens too (ppo_clip gives 0 there)
    torch.testing.assert_close(grad, -weights * ADV[:, None] * MASK / 5)
    assert {k: round(float(v), 4) for k, v in m.items()} == {
        "clip_low": 0.0, "clip_high": 1.0, "ratio": 4.8, "tokens": 5.0,
    }  # fmt: skip
    _, _, m = grad_of("cispo", logp, eps_low=0.2, eps_high=0.28)  # a lower bound 0.8: clips ρ = 0.5, 0.7
    assert m["clip_low"].item() == 2.0


# ---- sapo: a sigmoid gate instead of a clip


def sapo_by_hand(rho: float, a: float, tau_pos: float = 1.0, tau_neg: float = 1.05) -> tuple[float, float]:
    """(token loss, its derivative in logp) from the paper's f(ρ) = σ(τ(ρ - 1)) 4/τ."""
    tau = tau_pos if a > 0 else tau_neg
    sig = 1 / (1 + math.exp(-tau * (rho - 1)))
    return -a * sig * 4 / tau, -a * 4 * rho * sig * (1 - sig)


@pytest.mark.parametrize("taus", [(1.0, 1.05), (0.5, 2.0)])
def test_sapo_hand_computed(taus):
    value, grad, m = grad_of(
        "sapo", RATIOS.log(), agg="seq_mean_token_mean", tau_pos=taus[0], tau_neg=taus[1]
    )
    by_hand = [
        [sapo_by_hand(r, a, *taus) for r in row] for row, a in zip(RATIOS.tolist(), ADV.tolist(), strict=True)
    ]
    loss_rows = [sum(x[0] for x in row[:n]) / n for row, n in zip(by_hand, (3, 2), strict=True)]
    assert value.item() == pytest.approx(sum(loss_rows) / 2)
    want = torch.tensor([[x[1] for x in row] for row in by_hand]) * MASK / torch.tensor([[6.0], [4.0]])
    torch.testing.assert_close(grad, want)
    assert m["ratio"].item() == pytest.approx(4.8)


def test_sapo_at_ratio_one_is_the_policy_gradient():
    logp = torch.randn(2, 3)
    value, grad, m = grad_of("sapo", torch.zeros(2, 3) + 0 * logp, agg="token_mean")
    # f(1) = σ(0) 4/τ = 2/τ: loss -2A/τ per token; gradient -A ∇logp, as ppo_clip's at ρ = 1
    assert value.item() == pytest.approx((-2 / 1.0 * 3 + 2 * 2 / 1.05 * 2) / 5)
    torch.testing.assert_close(grad, -ADV[:, None] * MASK / 5)
    assert m["sapo_weight"].item() == pytest.approx(5.0)


# ---- gpg / reinforce: -A logp


@pytest.mark.parametrize("name", ["gpg", "reinforce"])
def test_reinforce_is_minus_advantage_logp(name):
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, -7.0]])
    value, grad, _ = grad_of(name, logp, agg="seq_mean_token_sum_norm")
    assert value.item() == pytest.approx((3.5 + 2 * -3.1) / (2 * 4))
    torch.testing.assert_close(grad, -ADV[:, None] * MASK / 8)


# ---- every objective, every aggregation: micro-batches add up to the full batch

EPS = {"ppo_clip": (0.2, 0.28), "gspo": (3e-4, 4e-4), "cispo": (1.0, 4.0)}


def random_batch(rows: int = 8, width: int = 7):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 2, 0, 4, 5, 1, 6, 3])[:rows]  # one completion fully masked (mask_truncated)
    mask = (torch.arange(width)[None] < lengths[:, None]).float()
    old = -torch.rand(rows, width, generator=g) * 3
    logp = old + torch.randn(rows, width, generator=g) * 0.3
    ref = old + torch.randn(rows, width, generator=g) * 0.1
    entropy = torch.rand(rows, width, generator=g) * 2
    return logp, old, ref, entropy, mask


@pytest.mark.parametrize("name", POLICY_LOSSES.names())
@pytest.mark.parametrize("agg", LOSS_AGGS.names())
@pytest.mark.parametrize("per_token_adv", [False, True])
def test_one_micro_batch_of_8_equals_8_of_1(name, agg, per_token_adv):
    logp, old, ref, entropy_values, mask = random_batch()
    g = torch.Generator().manual_seed(2)
    adv = torch.randn(8, 7, generator=g) if per_token_adv else torch.randn(8, generator=g)
    totals = LossTotals.from_mask(mask, max_completion_length=9)
    logp = logp.requires_grad_()
    entropy = entropy_values.clone().requires_grad_()  # stands in for the model's differentiable entropy
    eps_low, eps_high = EPS.get(name, (None, None))

    def run(rows: slice) -> torch.Tensor:
        return compute_policy_loss(
            name, logp[rows], old[rows], adv[rows], mask[rows], loss_agg=agg, eps_low=eps_low,
            eps_high=eps_high, totals=totals, ref_logp=ref[rows], beta=0.05, entropy=entropy[rows],
            entropy_coef=0.01,
        )[0]  # fmt: skip

    full = run(slice(None))
    full_grads = torch.autograd.grad(full, (logp, entropy))
    parts = sum(run(slice(i, i + 1)) for i in range(8))
    part_grads = torch.autograd.grad(parts, (logp, entropy))
    torch.testing.assert_close(parts, full)
    for got, want in zip(part_grads, full_grads, strict=True):
        torch.testing.assert_close(got, want)
    assert full_grads[0][2].eq(0).all() and full_grads[0].ne(0).any()
