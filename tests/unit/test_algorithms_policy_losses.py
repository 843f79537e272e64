"""Policy losses against hand-computed values: clip regions, masks, KL, gradients, accumulation invariance."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.algorithms.logprobs import token_logprobs
from r1lab.algorithms.policy_losses import (
    LOSS_AGGS,
    POLICY_LOSSES,
    LossTotals,
    ObjectiveParams,
    compute_policy_loss,
    mask_truncated_completions,
    sum_metrics,
)
from r1lab.errors import UserError

NAMES = ["seq_mean_token_mean", "seq_mean_token_sum_norm", "token_mean"]
EPS_LOW, EPS_HIGH = 0.2, 0.28
# row 0, A = +1: ρ 1.5 (clipped high to 1.28), 0.5 (not clipped: min picks ρA), 1.0
# row 1, A = -2: ρ 1.1 (inside), 0.7 (clipped low to 0.8), 2.0 (masked out)
RATIOS = torch.tensor([[1.5, 0.5, 1.0], [1.1, 0.7, 2.0]])
ADV = torch.tensor([1.0, -2.0])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# masked per-token losses: row 0: -1.28, -0.5, -1.0 (Σ -2.78, 3 tokens); row 1: 2.2, 1.6 (Σ 3.8, 2 tokens)
EXPECTED = {
    "token_mean": 1.02 / 5,
    "seq_mean_token_mean": (-2.78 / 3 + 3.8 / 2) / 2,
    "seq_mean_token_sum_norm": 1.02 / (2 * 4),
}
TOTALS = LossTotals(tokens=5, sequences=2, max_completion_length=4)


def loss_of(name: str, logp: torch.Tensor, **kw) -> tuple[torch.Tensor, dict]:
    kw.setdefault("totals", TOTALS)
    return compute_policy_loss(
        "ppo_clip",
        logp,
        torch.zeros(2, 3),
        ADV,
        MASK,
        loss_agg=name,
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        **kw,
    )


@pytest.mark.parametrize("name", NAMES)
def test_loss_hand_computed(name):
    loss, _ = loss_of(name, RATIOS.log())
    torch.testing.assert_close(loss, torch.tensor(EXPECTED[name]))


def test_metrics_are_token_sums_with_a_count():
    _, m = loss_of("token_mean", RATIOS.log())
    assert {k: round(float(v), 5) for k, v in m.items()} == {
        "clip_low": 1.0,
        "clip_high": 1.0,
        "clip_region": 2.0,
        "ratio": 4.8,
        "tokens": 5.0,
    }
    assert all(not v.requires_grad for v in m.values())
    total = sum_metrics([m, m])
    assert {k: float(v) for k, v in total.items()} == pytest.approx(
        {"clip_low": 2.0, "clip_high": 2.0, "clip_region": 4.0, "ratio": 9.6, "tokens": 10}
    )


@pytest.mark.parametrize("name", NAMES)
def test_kl_term_adds_beta_times_k3(name):
    k3 = 2 - math.log(2) - 1  # ref - logp = log 2 on every token
    logp = RATIOS.log()
    loss, m = loss_of(name, logp, ref_logp=logp + math.log(2), beta=0.1)
    # a constant per-token term averages to itself under grpo / dapo; dr_grpo divides by S x Lmax instead
    scale = 5 / 8 if name == "seq_mean_token_sum_norm" else 1.0
    torch.testing.assert_close(loss, torch.tensor(EXPECTED[name] + 0.1 * k3 * scale))
    assert float(m["kl"]) == pytest.approx(5 * k3)
    loss0, m0 = loss_of(name, logp, ref_logp=logp + math.log(2), beta=0.0)
    torch.testing.assert_close(loss0, torch.tensor(EXPECTED[name]))
    assert "kl" not in m0


# with ρ = 1 the loss is -Σ A m / normaliser: row 0 has 3 tokens of +1, row 1 two tokens of -2
EXPECTED_AT_RATIO_ONE = {
    "token_mean": (-3 + 4) / 5,
    "seq_mean_token_mean": (-1 + 2) / 2,
    "seq_mean_token_sum_norm": (-3 + 4) / 8,
}


@pytest.mark.parametrize("name", NAMES)
def test_gradient_is_minus_advantage_grad_logp_when_ratio_is_one(name):
    logp = torch.randn(2, 3, requires_grad=True)
    loss, _ = compute_policy_loss(
        "ppo_clip",
        logp,
        logp.detach(),
        ADV,
        MASK,
        loss_agg=name,
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        totals=TOTALS,
    )
    loss.backward()
    assert loss.item() == pytest.approx(EXPECTED_AT_RATIO_ONE[name])
    denom = {
        "token_mean": torch.full((2, 1), 5.0),
        "seq_mean_token_mean": torch.tensor([[3.0], [2.0]]) * 2,  # tokens of the sequence x sequences
        "seq_mean_token_sum_norm": torch.full((2, 1), 8.0),
    }[name]
    torch.testing.assert_close(logp.grad, -ADV[:, None] * MASK / denom)


def test_clipped_tokens_get_no_gradient():
    logp = RATIOS.log().requires_grad_()
    loss_of("token_mean", logp)[0].backward()
    # unclipped tokens: d(-ρA)/dlogp = -ρA; clipped (0,0) and (1,1) and masked (1,2): 0
    expected = torch.tensor([[0.0, -0.5, -1.0], [2.2, 0.0, 0.0]]) / 5
    torch.testing.assert_close(logp.grad, expected)


@pytest.mark.parametrize("name", NAMES)
def test_per_token_advantages_match_broadcast(name):
    a, _ = loss_of(name, RATIOS.log())
    b, _ = compute_policy_loss(
        "ppo_clip",
        RATIOS.log(),
        torch.zeros(2, 3),
        ADV[:, None].expand(2, 3),
        MASK,
        loss_agg=name,
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        totals=TOTALS,
    )
    torch.testing.assert_close(a, b)


def random_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, t = 5, 6
    lengths = torch.tensor([6, 2, 0, 4, 5])  # one completion fully masked (e.g. mask_truncated)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    old = -torch.rand(b, t, generator=g) * 3
    logp = (old + torch.randn(b, t, generator=g) * 0.4).requires_grad_()  # many ratios outside the clip
    ref = old + torch.randn(b, t, generator=g) * 0.1
    adv = torch.randn(b, generator=g)
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_micro_batch_losses_and_grads_sum_to_the_full_batch(name, beta):
    logp, old, ref, adv, mask = random_batch()
    totals = LossTotals.from_mask(mask, max_completion_length=8)
    assert (totals.tokens, totals.sequences) == (17.0, 4.0)

    def run(rows: slice) -> torch.Tensor:
        return compute_policy_loss(
            "ppo_clip",
            logp[rows],
            old[rows],
            adv[rows],
            mask[rows],
            loss_agg=name,
            eps_low=0.2,
            eps_high=0.28,
            totals=totals,
            ref_logp=ref[rows],
            beta=beta,
        )[0]

    full = run(slice(None))
    (full_grad,) = torch.autograd.grad(full, logp)
    parts = run(slice(0, 2)) + run(slice(2, 5))
    (parts_grad,) = torch.autograd.grad(parts, logp)
    torch.testing.assert_close(parts, full)
    torch.testing.assert_close(parts_grad, full_grad)
    assert torch.isfinite(full_grad).all() and full_grad[2].eq(0).all()


def test_dapo_with_per_micro_batch_counts_would_change_the_scale():
    """Why totals are global: normalising each micro-batch by its own tokens breaks accumulation."""
    logp, old, _, adv, mask = random_batch()

    def run(rows: slice, totals: LossTotals) -> torch.Tensor:
        return compute_policy_loss(
            "ppo_clip",
            logp[rows],
            old[rows],
            adv[rows],
            mask[rows],
            loss_agg="token_mean",
            eps_low=0.2,
            eps_high=0.2,
            totals=totals,
        )[0]

    full = run(slice(None), LossTotals.from_mask(mask))
    local = sum(run(s, LossTotals.from_mask(mask[s])) for s in (slice(0, 2), slice(2, 5)))
    assert not torch.allclose(local, full)


@pytest.mark.parametrize("name", NAMES)
def test_all_masked_batch_gives_zero_not_nan(name):
    logp = torch.randn(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3)
    totals = LossTotals.from_mask(mask)
    assert (totals.tokens, totals.sequences) == (0.0, 0.0)
    loss, m = compute_policy_loss(
        "ppo_clip",
        logp,
        logp.detach() - 1,
        ADV,
        mask,
        loss_agg=name,
        eps_low=0.2,
        eps_high=0.2,
        totals=totals,
    )
    loss.backward()
    assert loss.item() == 0.0 and logp.grad.eq(0).all()
    assert m["clip_region"].item() == 0.0


def test_mask_truncated_zeroes_completions_cut_at_the_limit():
    mask = torch.ones(3, 4, dtype=torch.long)
    out = mask_truncated_completions(mask, ["stop", "length", "stop"])
    assert out.tolist() == [[1] * 4, [0] * 4, [1] * 4]
    assert mask_truncated_completions(mask.bool(), ["length", "stop", "stop"]).dtype == torch.bool
    assert LossTotals.from_mask(out).sequences == 2
    with pytest.raises(ValueError):
        mask_truncated_completions(mask, ["stop"])


def test_bool_mask_matches_float_mask():
    a, _ = loss_of("seq_mean_token_mean", RATIOS.log())
    b, _ = compute_policy_loss(
        "ppo_clip",
        RATIOS.log(),
        torch.zeros(2, 3),
        ADV,
        MASK.bool(),
        loss_agg="seq_mean_token_mean",
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        totals=TOTALS,
    )
    torch.testing.assert_close(a, b)


def test_objectives_and_aggregations_are_two_registries():
    """As verl splits them: the objective (policy_loss) and how its token losses are aggregated (loss_agg)."""
    assert POLICY_LOSSES.names() == ["cispo", "gpg", "gspo", "ppo_clip", "reinforce", "sapo"]
    assert LOSS_AGGS.names() == sorted(NAMES)
    with pytest.raises(UserError, match="use one of: cispo, gpg, gspo, ppo_clip, reinforce, sapo"):
        compute_policy_loss(
            "dapo", RATIOS.log(), torch.zeros(2, 3), ADV, MASK, loss_agg="token_mean", eps_low=0.2,
            eps_high=0.2, totals=TOTALS,
        )  # fmt: skip
    with pytest.raises(UserError, match="seq_mean_token_mean, seq_mean_token_sum_norm, token_mean"):
        loss_of("dapo", RATIOS.log())


def test_ppo_clip_objective_alone_gives_unaggregated_token_losses():
    per_token, m = POLICY_LOSSES.get("ppo_clip")(
        RATIOS.log(), torch.zeros(2, 3), ADV[:, None], MASK.float(), ObjectiveParams(EPS_LOW, EPS_HIGH)
    )
    # the masked (1, 2) entry is computed too (ρ 2, A -2: -min(-4, -2.56) = 4): masking is the aggregation's job
    torch.testing.assert_close(per_token, torch.tensor([[-1.28, -0.5, -1.0], [2.2, 1.6, 4.0]]))
    assert {k: round(float(v), 5) for k, v in m.items()} == {
        "clip_low": 1.0, "clip_high": 1.0, "clip_region": 2.0, "ratio": 4.8,
    }  # fmt: skip


def test_entropy_is_logged_as_a_token_sum_and_not_part_of_the_loss():
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])  # the masked 100 is left out
    loss, m = loss_of("token_mean", RATIOS.log(), entropy=entropy)
    torch.testing.assert_close(loss, torch.tensor(EXPECTED["token_mean"]))
    assert m["entropy"].item() == 15.0 and m["entropy"].item() / m["tokens"].item() == 3.0


@pytest.mark.parametrize("name", NAMES)
def test_mu_updates_against_rollout_logprobs_stop_at_the_clip(name):
    """μ > 1: the rollout log-probs stay π_old, so with A > 0 each token's ratio rises until it passes
    1 + eps_high, after which the clip removes its gradient (the trust region)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, requires_grad=True)  # a toy policy: free logits per position
    tokens = torch.randint(0, 6, (2, 4))
    mask = torch.ones(2, 4)
    old_logp = token_logprobs(logits, tokens).detach()  # what the rollout engine returned
    opt = torch.optim.SGD([logits], lr=0.5)
    totals = LossTotals.from_mask(mask)
    for _ in range(60):
        opt.zero_grad()
        loss, m = compute_policy_loss(
            "ppo_clip",
            token_logprobs(logits, tokens),
            old_logp,
            torch.ones(2),
            mask,
            loss_agg=name,
            eps_low=0.2,
            eps_high=0.28,
            totals=totals,
        )
        loss.backward()
        opt.step()
    ratio = (token_logprobs(logits, tokens) - old_logp).exp()
    assert (ratio > 1.28).all() and (ratio < 2.0).all()  # moved past the clip, then stopped
    assert m["clip_high"].item() == m["tokens"].item() and logits.grad.abs().max() == 0
