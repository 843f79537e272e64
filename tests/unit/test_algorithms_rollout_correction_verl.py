"""The TIS / MIS weights against verl 0.9.1's rollout correction helper on the same tensors.

verl pins its own stack, so it lives in its own environment (see test_algorithms_objectives_verl.py):
  PYTHONPATH=src /work/venvs/verl/bin/python -m pytest tests/unit/test_algorithms_rollout_correction_verl.py
Elsewhere it is skipped.

The mapping: tis = verl's IS with a single threshold (`rollout_is_threshold: C`), mis token/sequence = its
IcePop form (`"lower_upper"`), mis geometric = its `seq_mean_k1` rejection filter, whose k1 = -log r is
bounded, so verl's "a_b" keeps 1/b <= r <= 1/a: r1lab's [lower, upper] is verl's "1/upper_1/lower".
"""

from __future__ import annotations

import pytest
import torch

from r1lab.algorithms.rollout_correction import rollout_is_weights

helper = pytest.importorskip("verl.trainer.ppo.rollout_corr_helper")


def batch(seed: int, spread: float):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 2, 5, 4, 1, 6, 3, 7])
    mask = (torch.arange(7)[None] < lengths[:, None]).float()
    sampler = -torch.rand(8, 7, generator=g) * 3
    trainer = sampler + torch.randn(8, 7, generator=g) * spread
    return trainer, sampler, mask


CASES = [  # (mode, level, lower, upper, verl's rollout_is, verl's threshold)
    ("tis", "token", None, 2.0, "token", 2.0),
    ("tis", "token", None, 1.2, "token", 1.2),
    ("tis", "sequence", None, 2.0, "sequence", 2.0),
    ("mis", "token", 0.5, 5.0, "token", "0.5_5.0"),
    ("mis", "token", 0.8, 1.25, "token", "0.8_1.25"),
    ("mis", "sequence", 0.5, 2.0, "sequence", "0.5_2.0"),
]


@pytest.mark.parametrize("seed,spread", [(0, 0.3), (1, 1.0), (2, 0.05)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[3]}")
def test_weights_and_fractions_match_verl(case, seed, spread):
    mode, level, lower, upper, verl_level, verl_threshold = case
    trainer, sampler, mask = batch(seed, spread)
    ours, affected = rollout_is_weights(
        trainer, sampler, mask, mode=mode, level=level, upper=upper, lower=lower
    )
    theirs, metrics = helper.compute_rollout_correction_weights(
        trainer - sampler, mask, rollout_is=verl_level, rollout_is_threshold=verl_threshold
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    fraction = float(affected.sum() / mask.sum())
    if level == "token" and mode == "tis":  # verl: raw ratio above the threshold, over the valid tokens
        assert fraction == pytest.approx(metrics["rollout_is_ratio_fraction_high"], abs=1e-6)
    if level == "token" and mode == "mis":
        assert fraction == pytest.approx(metrics["rollout_is_oob_ratio"], abs=1e-6)
    if spread == 1.0:  # not a vacuous comparison: some weights are truncated or masked, others not
        assert 0 < fraction < 1


@pytest.mark.parametrize("lower,upper", [(0.999, 1.001), (0.9, 1.1), (0.95, 1.3)])
@pytest.mark.parametrize("seed,spread", [(0, 0.3), (3, 0.02), (4, 0.001)])
def test_geometric_mis_matches_verls_seq_mean_k1_filter(lower, upper, seed, spread):
    trainer, sampler, mask = batch(seed, spread)
    ours, _ = rollout_is_weights(
        trainer, sampler, mask, mode="mis", level="geometric", upper=upper, lower=lower
    )
    kept, _ = helper.compute_rollout_rejection_mask(
        trainer - sampler, mask, rollout_rs="seq_mean_k1", rollout_rs_threshold=f"{1 / upper}_{1 / lower}"
    )
    torch.testing.assert_close(ours, kept.float())
    if spread == 0.3 and lower != 0.999:  # not a vacuous comparison: some rows kept, some masked
        assert 0 < float(ours.amax(-1).sum()) < len(ours)
