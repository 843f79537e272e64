"""The objectives' config keys (published clip ranges, keys an objective would ignore are refused) and an RL
run on the tiny model with GSPO's sequence clip."""

from __future__ import annotations

import pytest
from rl_testkit import read_metrics, rl_config, single_thread

from r1lab.config import AlgorithmConfig
from r1lab.errors import UserError
from r1lab.stages.rl import run_rl


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.mark.parametrize(
    ("objective", "expected"),
    [("ppo_clip", (0.2, 0.2)), ("gspo", (3e-4, 4e-4)), ("cispo", (1.0, 4.0)), ("sapo", (None, None))],
)
def test_unset_clip_range_is_the_objectives_published_one(objective, expected):
    algo = AlgorithmConfig(policy_loss=objective)
    assert (algo.eps_low, algo.eps_high) == (None, None)  # the resolved config says "unset"
    assert algo.clip_range() == expected
    if expected[0] is not None:
        assert AlgorithmConfig(policy_loss=objective, eps_high=0.3).clip_range() == (expected[0], 0.3)


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        ({"policy_loss": "sapo", "eps_high": 0.2}, "eps_high is not read by policy_loss sapo"),
        ({"policy_loss": "gpg", "eps_low": 0.2}, "eps_low is not read by policy_loss gpg"),
        ({"policy_loss": "gspo", "sapo_tau_neg": 2.0}, "sapo_tau_neg is read only by policy_loss sapo"),
    ],
)
def test_keys_the_objective_would_ignore_are_refused(tmp_path, tiny_model_dir, algorithm, message):
    with pytest.raises(UserError, match=message):
        rl_config(tmp_path, tiny_model_dir, {"algorithm": algorithm})


def test_unknown_objective_lists_the_known_ones(tmp_path, tiny_model_dir):
    cfg = rl_config(tmp_path, tiny_model_dir, {"algorithm": {"policy_loss": "gspoo"}})
    with pytest.raises(UserError) as err:
        run_rl(cfg)
    text = str(err.value)
    assert "algorithm.policy_loss" in text and "cispo, gpg, gspo, ppo_clip, reinforce, sapo" in text


def test_gspo_with_mu2_clips_whole_sequences(tmp_path, tiny_model_dir):
    length = rl_config(tmp_path, tiny_model_dir).rewards[0].name.replace(":target", ":length")
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {
            "rewards": [{"name": length}],
            "algorithm": {"policy_loss": "gspo", "mu": 2, "advantage": "reinforce_pp_baseline"},
            "optim": {"lr": 5e-2},
            "train": {"max_steps": 2},
        },
    )
    run_rl(cfg)
    metrics = read_metrics(tmp_path / "run")
    # the logged update is the 2nd of each batch: after one step at lr 5e-2 the sequence ratios have left
    # GSPO's 3e-4 / 4e-4 band, and the clip removes the gradient of the sequences pushed past it
    assert all(m["clip_ratio/region"] > 0.3 for m in metrics)
    assert all(abs(m["ratio"] - 1) > 4e-4 for m in metrics)
