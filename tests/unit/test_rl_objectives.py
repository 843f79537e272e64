"""The objectives' config keys (published clip ranges, keys an objective would ignore are refused) and an RL
run on the tiny model with GSPO's sequence clip."""

from __future__ import annotations

import pytest
import torch
from rl_testkit import read_metrics, rl_config, single_thread

from r1lab.algorithms.advantages import ADVANTAGES
from r1lab.config import AlgorithmConfig
from r1lab.errors import UserError
from r1lab.rollout.types import Rollouts
from r1lab.stages.rl import run_rl
from r1lab.stages.rl_batch import Scored, advantages_for, plan_update


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


def _scored(finish_reasons: list[str]) -> Scored:
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    rollouts = Rollouts(
        prompt_index=[0, 0, 1, 1], prompt_ids=[[1]] * 4, completion_ids=mask.clone(), completion_mask=mask,
        logprobs=torch.zeros(4, 4), finish_reasons=finish_reasons, texts=[""] * 4,
    )  # fmt: skip
    return Scored(rollouts, torch.tensor([1.0, 0.0, 0.0, 1.0]), {}, {}, [], [""] * 4, 0.0, 0.0)


def test_reinforce_pp_whitens_over_the_final_loss_mask():
    """With mask_truncated the cut completion (row 1) has no loss token, so it weighs nothing in the whitening."""
    scored = _scored(["stop", "length", "stop", "stop"])
    lengths = {False: [3.0, 4.0, 1.0, 2.0], True: [3.0, 0.0, 1.0, 2.0]}
    for mask_truncated, expected in lengths.items():
        got = advantages_for(scored, "reinforce_pp", mask_truncated)
        want = ADVANTAGES.get("reinforce_pp")(
            scored.rewards, torch.tensor([0, 0, 1, 1]), lengths=torch.tensor(expected)
        )
        torch.testing.assert_close(got, want)
    assert not torch.allclose(
        advantages_for(scored, "reinforce_pp", True), advantages_for(scored, "reinforce_pp")
    )


def test_the_rl_loop_passes_mask_truncated_to_the_advantages(tmp_path, tiny_model_dir, monkeypatch):
    calls = []

    def spy(scored, name, mask_truncated=False):
        calls.append((name, mask_truncated))
        return advantages_for(scored, name, mask_truncated)

    monkeypatch.setattr("r1lab.stages.rl.advantages_for", spy)
    algorithm = {"advantage": "reinforce_pp", "mask_truncated": True}
    run_rl(rl_config(tmp_path, tiny_model_dir, {"algorithm": algorithm, "train": {"max_steps": 1}}))
    assert calls == [("reinforce_pp", True)]


@pytest.mark.parametrize(("algorithm", "trained"), [({}, [0, 3]), ({"entropy_coef": 0.01}, [0, 1, 2, 3])])
def test_zero_advantage_rows_are_skipped_only_without_a_kl_or_entropy_term(
    tmp_path, tiny_model_dir, algorithm, trained
):
    """Their policy loss is 0, but an entropy bonus still has a gradient on them."""
    cfg = rl_config(tmp_path, tiny_model_dir, {"algorithm": algorithm})
    batch = _scored(["stop"] * 4).rollouts
    plan = plan_update(batch, torch.tensor([0.5, 0.0, 0.0, -0.5]), cfg)
    assert [i for mb in plan.micro_batches for i in mb] == list(range(len(trained)))
    assert plan.rows.completion_mask.sum(-1).tolist() == batch.completion_mask[trained].sum(-1).tolist()
