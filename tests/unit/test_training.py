"""r1lab.training: schedules, data order, RNG round trip, run-dir checks, precision checks, metrics file."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch

from r1lab.config import ModelConfig, OptimConfig
from r1lab.errors import UserError
from r1lab.training.accel import bf16_supported, check_model_dtype, resolve_precision
from r1lab.training.checkpoint import rng_state, set_rng_state
from r1lab.training.data_order import EpochOrder, shard
from r1lab.training.optim import build_optimizer, build_scheduler, lr_factor
from r1lab.training.rundir import ensure_writable, read_state, write_state
from r1lab.training.tracking import Tracker

CPU = torch.device("cpu")


def test_warmup_then_cosine_reaches_min_lr() -> None:
    f = [lr_factor(s, warmup=2, total=10, kind="cosine", min_lr_ratio=0.1) for s in range(11)]
    assert f[:3] == [0.5, 1.0, 1.0]  # the first update already moves (1/warmup), never lr 0
    assert f[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(f[2:]))
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay


def test_linear_and_constant_schedules() -> None:
    assert lr_factor(5, warmup=0, total=10, kind="linear") == pytest.approx(0.5)
    assert lr_factor(7, warmup=0, total=10, kind="constant") == 1.0


def test_scheduler_drives_optimizer_lr_and_no_decay_on_1d_params() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    cfg = OptimConfig(lr=1.0, weight_decay=0.1, warmup_ratio=0.25, scheduler="linear")
    opt = build_optimizer(model, cfg)
    decays = sorted((g["weight_decay"], len(g["params"])) for g in opt.param_groups)
    assert decays == [(0.0, 3), (0.1, 1)]  # linear bias + norm weight/bias undecayed
    sched = build_scheduler(opt, cfg, total_steps=8)
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:4] == pytest.approx([0.5, 1.0, 1.0, 1.0 - 1 / 6])  # warmup = ceil(0.25 * 8) = 2


def test_epoch_order_is_seeded_reshuffled_and_drops_tail() -> None:
    order = EpochOrder(10, global_batch=3, seed=7)
    assert order.steps_per_epoch == 3
    epoch0 = [i for s in range(3) for i in order.batch(s)]
    assert len(set(epoch0)) == 9
    again = EpochOrder(10, global_batch=3, seed=7)
    assert [again.batch(s) for s in (4, 0)] == [order.batch(4), order.batch(0)]  # any step, any order
    assert order.batch(3) + order.batch(4) != epoch0[:6]  # epoch 1 is a new permutation
    assert order.position(4) == (1, 1)
    assert EpochOrder(10, 3, seed=7, shuffle=False).batch(1) == [3, 4, 5]


def test_epoch_order_rejects_dataset_smaller_than_a_batch() -> None:
    with pytest.raises(UserError, match="fewer than one global batch"):
        EpochOrder(3, global_batch=8, seed=0)


def test_shard_splits_ranks_and_groups_by_length() -> None:
    lengths = [5, 1, 4, 2, 3, 6, 7, 8]
    idx = [0, 1, 2, 3, 4, 5, 6, 7]
    r0 = shard(idx, lengths, rank=0, world=2, micro_batch=2)
    r1 = shard(idx, lengths, rank=1, world=2, micro_batch=2)
    assert r0 == [[4, 2], [0, 6]] and r1 == [[1, 3], [5, 7]]
    assert sorted(i for mb in r0 + r1 for i in mb) == idx


def test_rng_state_round_trip_through_weights_only_load(tmp_path) -> None:
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_unwritable_output_dir_is_a_user_error(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError) as e:
        ensure_writable(blocker / "run")
    assert e.value.where == "train.output_dir" and "cannot write" in e.value.what
    assert ensure_writable(tmp_path / "ok" / "run") == tmp_path / "ok" / "run"
    # the check leaves nothing behind; the stage creates the folder on its first write
    assert not (tmp_path / "ok").exists()


def test_state_json_round_trip(tmp_path) -> None:
    assert read_state(tmp_path) is None
    write_state(tmp_path, "running", step=3)
    assert read_state(tmp_path)["status"] == "running" and read_state(tmp_path)["step"] == 3


def test_precision_checks() -> None:
    with pytest.raises(UserError, match="fp16 mixed precision needs a GPU"):
        resolve_precision("fp16", CPU)
    assert resolve_precision("auto", CPU) == ("bf16" if bf16_supported(CPU) else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(UserError, match="float16 weights on CPU"):
        check_model_dtype(ModelConfig(dtype="float16"), CPU)


def test_tracker_writes_jsonl_and_truncates_on_resume(tmp_path) -> None:
    tracker = Tracker(tmp_path, enabled=True, total_steps=4)
    for step in range(1, 5):
        tracker.log(step, {"loss": 1.0 / step, "lr": torch.tensor(0.5)})
    tracker.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[0]["lr"] == 0.5 and "time" in rows[0]
    resumed = Tracker(tmp_path, enabled=True, total_steps=4, start_step=2)  # checkpoint was at step 2
    resumed.log(3, {"loss": 9.0})
    resumed.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5), (3, 9.0)]
    Tracker(tmp_path / "other", enabled=False, total_steps=1).log(1, {"loss": 1.0})
    assert not (tmp_path / "other").exists()  # non-main ranks write nothing


def test_tracker_writes_tensorboard_events_when_asked(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    tracker = Tracker(tmp_path, enabled=True, total_steps=2, report_to=["tensorboard"])
    tracker.log(1, {"loss": 2.0, "lr": 1e-3})
    tracker.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
