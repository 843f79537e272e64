"""The objectives against TRL's own GRPO loss (GRPOTrainer._compute_loss) on the same tensors: its loss body is
run with the log-probs it would have computed handed in, on a stand-in for the trainer's state.

TRL spells them: GSPO = loss_type "grpo" with importance_sampling_level "sequence" (its sequence form,
the per-sequence loss averaged over sequences); CISPO caps the weight absolutely at epsilon_high (TRL's 5.0 is
r1lab's eps_high 4.0, no lower bound); SAPO and the clipped loss as ours. Skipped when trl is not installed.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from r1lab.algorithms.policy_losses import LossTotals, compute_policy_loss

grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")

MAX_LEN = 9


class _Accelerator:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_loss(loss_type, level, logp, old, adv, mask, eps_low, eps_high, entropy=None, entropy_coef=0.0):
    entropies = torch.zeros_like(logp) if entropy is None else entropy
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, entropies, None),
        top_entropy_quantile=1.0,
        aux_loss_enabled=False,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=0.0,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        args=SimpleNamespace(
            delta=None,
            use_bias_correction_kl=False,
            sapo_temperature_pos=1.0,
            sapo_temperature_neg=1.05,
            steps_per_generation=1,
        ),
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=MAX_LEN,
        accelerator=_Accelerator(),
        _metrics={"train": defaultdict(list)},
        _entropy_bonus_enabled=entropy_coef > 0,
        entropy_coef=entropy_coef,
        use_adaptive_entropy=False,
    )
    rows, width = mask.shape
    inputs = {
        "prompt_ids": torch.zeros(rows, 1, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 1, dtype=torch.long),
        "completion_ids": torch.zeros(rows, width, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": mask.sum(),
    }
    return grpo_trainer.GRPOTrainer._compute_loss(trainer, None, inputs)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 2, 5, 4, 1, 6])
    mask = (torch.arange(7)[None] < lengths[:, None]).float()
    old = -torch.rand(6, 7, generator=g) * 3
    logp = old + torch.randn(6, 7, generator=g) * 0.3
    adv = torch.randn(6, generator=g)
    entropy = torch.rand(6, 7, generator=g) * 2
    return logp, old, adv, mask, entropy


CASES = [  # (ours, our eps, our aggregation, TRL loss_type, importance_sampling_level, TRL eps)
    ("gspo", (3e-4, 4e-4), "seq_mean_token_mean", "grpo", "sequence", (3e-4, 4e-4)),
    ("gspo", (0.05, 0.08), "seq_mean_token_mean", "grpo", "sequence", (0.05, 0.08)),
    ("cispo", (1.0, 4.0), "token_mean", "cispo", "token", (0.2, 5.0)),
    ("cispo", (1.0, 0.2), "token_mean", "cispo", "token", (0.2, 1.2)),
    ("sapo", (None, None), "seq_mean_token_mean", "sapo", "token", (0.2, 0.2)),
    ("ppo_clip", (0.2, 0.28), "token_mean", "dapo", "token", (0.2, 0.28)),
    ("ppo_clip", (0.2, 0.28), "seq_mean_token_mean", "grpo", "token", (0.2, 0.28)),
    ("ppo_clip", (0.2, 0.28), "seq_mean_token_sum_norm", "dr_grpo", "token", (0.2, 0.28)),
]


@pytest.mark.parametrize(("ours", "eps", "agg", "loss_type", "level", "trl_eps"), CASES)
def test_objective_matches_trl(ours, eps, agg, loss_type, level, trl_eps):
    logp, old, adv, mask, _ = batch()
    mine = logp.clone().requires_grad_()
    value, _ = compute_policy_loss(
        ours, mine, old, adv, mask, loss_agg=agg, eps_low=eps[0], eps_high=eps[1],
        totals=LossTotals.from_mask(mask, MAX_LEN),
    )  # fmt: skip
    (grad,) = torch.autograd.grad(value, mine)
    peer = logp.clone().requires_grad_()
    peer_value = trl_loss(loss_type, level, peer, old, adv, mask, *trl_eps)
    (peer_grad,) = torch.autograd.grad(peer_value, peer)
    torch.testing.assert_close(value, peer_value)
    torch.testing.assert_close(grad, peer_grad)


def test_entropy_bonus_matches_trl_under_token_mean():
    """TRL's bonus is always the token mean of the entropy; ours follows loss_agg, so they agree at token_mean."""
    logp, old, adv, mask, entropy_values = batch(1)
    mine, their_entropy = logp.clone().requires_grad_(), entropy_values.clone().requires_grad_()
    entropy = entropy_values.clone().requires_grad_()
    value, _ = compute_policy_loss(
        "ppo_clip", mine, old, adv, mask, loss_agg="token_mean", eps_low=0.2, eps_high=0.28,
        totals=LossTotals.from_mask(mask, MAX_LEN), entropy=entropy, entropy_coef=0.01,
    )  # fmt: skip
    grads = torch.autograd.grad(value, (mine, entropy))
    peer = logp.clone().requires_grad_()
    peer_value = trl_loss("dapo", "token", peer, old, adv, mask, 0.2, 0.28, their_entropy, 0.01)
    peer_grads = torch.autograd.grad(peer_value, (peer, their_entropy))
    torch.testing.assert_close(value, peer_value)
    for got, want in zip(grads, peer_grads, strict=True):
        torch.testing.assert_close(got, want)
