"""One resume path for SFT and RL (r1lab.training.resume): a fresh run refuses a folder holding checkpoints, and a
resumed run must agree with its checkpoint on what its data position means (batch shape, G, process count)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rl_testkit import rl_config, single_thread

from r1lab.config import OptimConfig, TrainConfig
from r1lab.errors import UserError
from r1lab.stages.rl import run_rl
from r1lab.training.accel import build_accelerator
from r1lab.training.checkpoint import META_FILE, find_latest_checkpoint
from r1lab.training.data_order import EpochOrder
from r1lab.training.optim import build_optimizer, build_scheduler
from r1lab.training.resume import restore, resume_point


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished 2-step RL run (prompts_per_step 2, rollout.n 4) with a checkpoint at step 2."""
    tmp = tmp_path_factory.mktemp("rl-resume")
    run_rl(rl_config(tmp, tiny_model_dir))
    return tmp


@pytest.mark.parametrize(
    ("override", "key", "saved", "now"),
    [({"prompts_per_step": 4}, "prompts_per_step", 2, 4), ({"rollout": {"n": 2}}, "rollout.n", 4, 2)],
)
def test_rl_resume_refuses_another_batch_shape(rl_run, tiny_model_dir, override, key, saved, now) -> None:
    cfg = rl_config(rl_run, tiny_model_dir, {**override, "train": {"resume": True, "max_steps": 4}})
    with pytest.raises(UserError) as e:
        run_rl(cfg)
    assert f"{key} = {saved}, this run has {now}" in e.value.what and e.value.where.startswith(key)
    assert f"resume with {key} = {saved}" in e.value.fix


def test_resume_refuses_another_process_count(rl_run, tiny_model_dir) -> None:
    checkpoint = find_latest_checkpoint(rl_run / "run")
    meta = json.loads((checkpoint / META_FILE).read_text())
    assert (meta["prompts_per_step"], meta["rollout_n"], meta["world_size"]) == (2, 4, 1)
    (checkpoint / META_FILE).write_text(json.dumps({**meta, "world_size": 2}))
    try:
        accelerator, _ = build_accelerator(TrainConfig())
        model = torch.nn.Linear(2, 2)
        optimizer = build_optimizer(model, OptimConfig())
        with pytest.raises(UserError, match=r"process count .* = 2, this run has 1"):
            restore(
                checkpoint, accelerator, model, optimizer, build_scheduler(optimizer, OptimConfig(), 4), {}
            )
    finally:
        (checkpoint / META_FILE).write_text(json.dumps(meta))


def test_a_fresh_run_refuses_a_folder_with_checkpoints_and_resume_finds_the_newest(rl_run) -> None:
    out = rl_run / "run"
    with pytest.raises(UserError, match="already holds checkpoints"):
        resume_point(TrainConfig(resume=False), out)
    assert resume_point(TrainConfig(resume=True), out) == out / "checkpoints" / "step-2"
    assert resume_point(TrainConfig(resume="auto"), rl_run / "empty") is None


def test_rl_prompt_stream_is_the_epoch_order() -> None:
    """RL's prompt stream and SFT's batches come from one seeded permutation per epoch."""
    order = EpochOrder(5, 1, seed=3)
    stream = [order.at(p) for p in range(10)]
    assert sorted(stream[:5]) == sorted(stream[5:]) == list(range(5)) and stream[:5] != stream[5:]
    batches = EpochOrder(5, 5, seed=3)
    assert stream[:5] == batches.batch(0) and stream[5:] == batches.batch(1)
    # the permutation RL used before it shared this one: randperm from seed * 1_000_003 + epoch
    expected = torch.randperm(5, generator=torch.Generator().manual_seed(3 * 1_000_003 + 1)).tolist()
    assert stream[5:] == expected
    assert [EpochOrder(5, 1, seed=3, shuffle=False).at(p) for p in range(7)] == [0, 1, 2, 3, 4, 0, 1]
