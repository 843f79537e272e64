"""The objectives and the REINFORCE++ and OPO estimators against verl's own functions on the same tensors.

verl pins its own stack, so it lives in its own environment; there this module runs with
  python3 -m venv /work/venvs/verl && pip install --no-deps verl tensordict pyvers omegaconf codetiming
(torch from the main environment) and
  PYTHONPATH=src /work/venvs/verl/bin/python -m pytest tests/unit/test_algorithms_objectives_verl.py
Elsewhere it is skipped.
"""

from __future__ import annotations

import pytest
import torch

from r1lab.algorithms.advantages import ADVANTAGES
from r1lab.algorithms.policy_losses import LossTotals, compute_policy_loss

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402

# r1lab's aggregation -> verl's loss_agg_mode (verl's seq-mean-token-sum-norm divides by loss_scale_factor)
AGGS = {
    "token_mean": "token-mean",
    "seq_mean_token_mean": "seq-mean-token-mean",
    "seq_mean_token_sum_norm": "seq-mean-token-sum-norm",
}
MAX_LEN = 9


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 2, 5, 4, 1, 6])
    mask = (torch.arange(7)[None] < lengths[:, None]).float()
    old = -torch.rand(6, 7, generator=g) * 3
    logp = old + torch.randn(6, 7, generator=g) * 0.3
    adv = torch.randn(6, generator=g)
    return logp, old, adv, mask


def verl_config(mask: torch.Tensor, eps_low: float, eps_high: float) -> ActorConfig:
    cfg = ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=eps_low,
        clip_ratio_high=eps_high,
    )  # fmt: skip
    cfg.global_batch_info.update(
        dp_size=1,
        batch_num_tokens=mask.sum(),
        global_batch_size=(mask.sum(-1) > 0).sum(),
        loss_scale_factor=MAX_LEN,
    )
    return cfg


CASES = [  # (r1lab objective, verl's, eps_low, eps_high, aggregations verl applies)
    ("gspo", "gspo", 3e-4, 4e-4, list(AGGS)),
    ("gspo", "gspo", 0.1, 0.15, list(AGGS)),
    ("cispo", "cispo", 10.0, 0.2, list(AGGS)),  # verl's CISPO example: no lower bound, weight <= 1.2
    ("cispo", "cispo", 0.2, 0.28, list(AGGS)),
    ("gpg", "gpg", None, None, list(AGGS)),
    ("sapo", "sapo", None, None, ["seq_mean_token_mean"]),  # verl's sapo always aggregates this way
    ("ppo_clip", "vanilla", 0.2, 0.28, list(AGGS)),
]


@pytest.mark.parametrize(("ours", "theirs", "eps_low", "eps_high", "aggs"), CASES)
def test_objective_matches_verl(ours, theirs, eps_low, eps_high, aggs):
    for agg in aggs:
        logp, old, adv, mask = batch()
        mine = logp.clone().requires_grad_()
        value, _ = compute_policy_loss(
            ours, mine, old, adv, mask, loss_agg=agg, eps_low=eps_low, eps_high=eps_high,
            totals=LossTotals.from_mask(mask, MAX_LEN),
        )  # fmt: skip
        (grad,) = torch.autograd.grad(value, mine)

        peer = logp.clone().requires_grad_()
        cfg = verl_config(mask, 0.2 if eps_low is None else eps_low, 0.2 if eps_high is None else eps_high)
        fn = core_algos.get_policy_loss_fn(theirs)
        peer_value = fn(old, peer, adv[:, None].expand_as(mask), mask, AGGS[agg], cfg)[0]
        (peer_grad,) = torch.autograd.grad(peer_value, peer)
        torch.testing.assert_close(value, peer_value, msg=f"{ours} / {agg}")
        torch.testing.assert_close(grad, peer_grad, msg=f"{ours} / {agg}")


def test_reinforce_pp_matches_verl():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 1.0])
    _, _, _, mask = batch()
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(6), mask.sum(-1).long() - 1] = rewards  # the outcome reward on the last token
    theirs, _ = core_algos.compute_reinforce_plus_plus_outcome_advantage(
        token_rewards, mask, config=AlgoConfig(gamma=1.0)
    )
    ours = ADVANTAGES.get("reinforce_pp")(rewards, torch.arange(6), lengths=mask.sum(-1))
    torch.testing.assert_close(ours[:, None] * mask, theirs)


def test_reinforce_pp_baseline_matches_verl():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 1, 0])  # verl's baseline treats a one-row group differently: none here
    _, _, _, mask = batch()
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(6), mask.sum(-1).long() - 1] = rewards
    theirs, _ = core_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(
        token_rewards, mask, groups.numpy(), config=AlgoConfig()
    )
    ours = ADVANTAGES.get("reinforce_pp_baseline")(rewards, groups, lengths=mask.sum(-1))
    torch.testing.assert_close(ours[:, None] * mask, theirs)


def test_opo_matches_verl():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 1, 0])  # verl gives a one-row group baseline 0 (r1lab: advantage 0)
    _, _, _, mask = batch()
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(6), mask.sum(-1).long() - 1] = rewards
    theirs, _ = core_algos.compute_opo_outcome_advantage(
        token_rewards, mask, groups.numpy(), config=AlgoConfig()
    )
    ours = ADVANTAGES.get("opo")(rewards, groups, lengths=mask.sum(-1))
    torch.testing.assert_close(ours[:, None] * mask, theirs)
