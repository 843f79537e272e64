"""Preference losses: each against its paper's formula on hand-computed cases, and against TRL's implementation
(DPOTrainer._compute_loss, CPOTrainer.cpo_loss, ORPOTrainer.odds_ratio_loss) on the same tensors."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from r1lab.algorithms.preference_losses import (
    PREFERENCE_LOSSES,
    PairLogps,
    PreferenceParams,
    implicit_rewards,
    preference_loss,
)


def pairs(chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens) -> PairLogps:
    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    return PairLogps(
        t(chosen), t(rejected), t(chosen_tokens), t(rejected_tokens), t(ref_chosen), t(ref_rejected)
    )


# pair 0: Δ = (-2 - -3) - (-4 - -3) = 2; pair 1: Δ = 0
HAND = pairs([-2.0, -3.0], [-4.0, -3.0], [-3.0, -3.0], [-3.0, -3.0], [2, 2], [4, 2])
BETA = 0.5


def sp(x: float) -> float:
    """softplus: -log σ(-x)"""
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("sigmoid", {}, [sp(-1.0), math.log(2)]),  # -log σ(βΔ), βΔ = 1 and 0
        ("sigmoid", {"label_smoothing": 0.1}, [0.9 * sp(-1.0) + 0.1 * sp(1.0), math.log(2)]),  # cDPO
        (
            "robust",
            {"label_smoothing": 0.1},
            [(0.9 * sp(-1.0) - 0.1 * sp(1.0)) / 0.8, 0.8 * math.log(2) / 0.8],
        ),
        ("hinge", {}, [0.0, 1.0]),  # max(0, 1 - βΔ)
        # Δc/|c| - Δr/|r| = 1/2 - (-1/4) = 0.75 and 0; minus 1/(2β) = 1
        ("ipo", {}, [(0.75 - 1) ** 2, 1.0]),
        # mean logps: c -1 vs r -1 -> 0, and -1.5 vs -1.5 -> 0: -log σ(-γ)
        ("simpo", {"simpo_gamma": 0.5}, [sp(0.5), sp(0.5)]),
    ],
)
def test_losses_on_hand_computed_pairs(name, params, expected) -> None:
    got = PREFERENCE_LOSSES.get(name)(HAND, PreferenceParams(beta=BETA, **params))
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_orpo_and_rpo_on_hand_computed_pairs() -> None:
    # per-token p = 0.5 on chosen (odds 1), 0.25 on rejected (odds 1/3): log odds ratio = log 3
    logps = PairLogps(
        torch.tensor([2 * math.log(0.5)], dtype=torch.float64),
        torch.tensor([3 * math.log(0.25)], dtype=torch.float64),
        torch.tensor([2.0]),
        torch.tensor([3.0]),
    )
    nll = -math.log(0.5)
    got = preference_loss("orpo", logps, PreferenceParams(beta=BETA))
    assert got.item() == pytest.approx(nll - BETA * math.log(0.75), abs=1e-12)  # log σ(log 3) = log 3/4
    # rpo_alpha adds alpha x the chosen NLL per token to any loss
    with_rpo = preference_loss("sigmoid", HAND, PreferenceParams(beta=BETA, rpo_alpha=2.0))
    assert with_rpo.tolist() == pytest.approx([sp(-1.0) + 2 * 1.0, math.log(2) + 2 * 1.5], abs=1e-12)


def test_implicit_rewards_and_reference_checks() -> None:
    chosen, rejected = implicit_rewards("sigmoid", HAND, BETA)
    assert chosen.tolist() == [0.5, 0.0] and rejected.tolist() == [-0.5, 0.0]
    chosen, _ = implicit_rewards("simpo", HAND, BETA)
    assert chosen.tolist() == [-0.5, -0.75]  # β x mean log-prob
    no_ref = PairLogps(HAND.chosen, HAND.rejected, HAND.chosen_tokens, HAND.rejected_tokens)
    with pytest.raises(ValueError, match="reference"):
        PREFERENCE_LOSSES.get("sigmoid")(no_ref, PreferenceParams())
    with pytest.raises(ValueError, match="label_smoothing"):
        PREFERENCE_LOSSES.get("robust")(HAND, PreferenceParams(label_smoothing=0.5))


# ------------------------------------------------------------------------------------------- against TRL


def random_pairs(n: int = 6, tokens: int = 5, seed: int = 0) -> PairLogps:
    """Random log-probs; every response has `tokens` tokens except where noted by the caller."""
    g = torch.Generator().manual_seed(seed)
    logp = lambda: -torch.rand(n, generator=g, dtype=torch.float64) * 8 - 0.1  # noqa: E731
    lengths = torch.randint(1, tokens + 1, (2, n), generator=g).double()
    return PairLogps(logp(), logp(), lengths[0], lengths[1], logp(), logp())


def trl_dpo(logps: PairLogps, loss_types: list[str], weights: list[float], beta: float, eps: float) -> float:
    """TRL's DPOTrainer._compute_loss on these log-probs: a stand-in model returns per-token log-probs that
    spread each response's sum evenly over its tokens."""
    trl = pytest.importorskip("trl")
    n = logps.chosen.shape[0]
    lengths = torch.cat([logps.chosen_tokens, logps.rejected_tokens]).long()
    width = int(lengths.max()) + 2
    completion_mask = torch.zeros(2 * n, width, dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        completion_mask[row, 1 : 1 + length] = 1  # position 0 is the prompt
    shifted = completion_mask[:, 1:].double()
    sums = torch.cat([logps.chosen, logps.rejected])
    per_token = shifted * (sums / lengths)[:, None]
    zeros = torch.zeros_like(per_token)
    outputs = SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())
    accel = SimpleNamespace(device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x)
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=accel,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=weights,
        beta=beta,
        label_smoothing=eps,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * n, width, dtype=torch.long),
        "attention_mask": torch.ones(2 * n, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": logps.ref_chosen,
        "ref_rejected_logps": logps.ref_rejected,
    }
    return float(trl.DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, False))


@pytest.mark.parametrize(
    ("name", "eps"), [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.0), ("robust", 0.2)]
)
def test_reference_losses_match_trl_dpo_trainer(name, eps) -> None:
    logps = random_pairs()
    for beta in (0.1, 0.7):
        ours = preference_loss(name, logps, PreferenceParams(beta=beta, label_smoothing=eps)).mean().item()
        assert ours == pytest.approx(trl_dpo(logps, [name], [1.0], beta, eps), rel=1e-9, abs=1e-12)


def test_rpo_alpha_matches_trl_sigmoid_plus_sft() -> None:
    logps = (
        random_pairs()
    )  # TRL's sft term is one token mean over the batch: equal chosen lengths make it ours
    logps = PairLogps(**{**logps.__dict__, "chosen_tokens": torch.full_like(logps.chosen, 4.0)})
    ours = preference_loss("sigmoid", logps, PreferenceParams(beta=0.3, rpo_alpha=0.5)).mean().item()
    assert ours == pytest.approx(trl_dpo(logps, ["sigmoid", "sft"], [1.0, 0.5], 0.3, 0.0), rel=1e-9)


def cpo_self(loss_type: str, beta: float, eps: float = 0.0, gamma: float = 0.5) -> SimpleNamespace:
    accel = SimpleNamespace(device="cpu")
    return SimpleNamespace(
        alpha=0.0, beta=beta, label_smoothing=eps, loss_type=loss_type, simpo_gamma=gamma, accelerator=accel
    )


def test_cdpo_matches_trl_label_smoothed_sigmoid() -> None:
    """CPO's sigmoid loss is label-smoothed DPO on (chosen - rejected): fed the log-ratios it is cDPO."""
    pytest.importorskip("trl")
    from trl.experimental.cpo import CPOTrainer

    logps = random_pairs()
    chosen, rejected = logps.logratios()
    theirs, _, _ = CPOTrainer.cpo_loss(cpo_self("sigmoid", 0.4, eps=0.15), chosen, rejected)
    ours = preference_loss("sigmoid", logps, PreferenceParams(beta=0.4, label_smoothing=0.15))
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_simpo_matches_trl_cpo_simpo() -> None:
    pytest.importorskip("trl")
    from trl.experimental.cpo import CPOTrainer

    logps = random_pairs(seed=1)
    chosen, rejected = logps.mean_logps()  # CPO's simpo takes length-averaged log-probs
    theirs, _, _ = CPOTrainer.cpo_loss(cpo_self("simpo", 2.0, gamma=0.8), chosen, rejected)
    ours = preference_loss("simpo", logps, PreferenceParams(beta=2.0, simpo_gamma=0.8))
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_orpo_matches_trl_odds_ratio_loss_plus_nll() -> None:
    pytest.importorskip("trl")
    from trl.experimental.orpo import ORPOTrainer

    logps = random_pairs(seed=2)
    logps = PairLogps(**{**logps.__dict__, "chosen_tokens": torch.full_like(logps.chosen, 3.0)})
    chosen, rejected = logps.mean_logps()
    fake = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device="cpu"))
    ratio, *_ = ORPOTrainer.odds_ratio_loss(fake, chosen, rejected)
    theirs = -chosen.float().mean() - ratio.mean()  # TRL: policy_nll_loss - losses.mean()
    ours = preference_loss("orpo", logps, PreferenceParams(beta=0.25)).mean()
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-6, atol=1e-6)  # TRL computes it in float32
