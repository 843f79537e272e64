"""A full disk while writing a checkpoint or the final model, on a small real tmpfs (needs root to mount; skipped
elsewhere): one DiskFull error naming the folder and the space needed, no partial folder left, state.json
marked failed, the previous checkpoint intact."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from r1lab.config import ModelConfig, OptimConfig, TrainConfig
from r1lab.models import load_model
from r1lab.training.accel import build_accelerator
from r1lab.training.checkpoint import (
    DiskFull,
    checkpoint_bytes,
    find_latest_checkpoint,
    load_weights,
    save_checkpoint,
    save_final,
)
from r1lab.training.optim import build_optimizer, build_scheduler


@pytest.fixture
def disk(tmp_path) -> Path:
    """A 4 MiB tmpfs mounted for this test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Take the disk's free space down to about `leave` bytes."""
    free = shutil.disk_usage(folder).free
    with (folder / "filler").open("wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.fixture
def trained(tiny_model_dir):
    """The tiny model after one optimizer step (so the optimizer holds state, 2x the weights)."""
    accelerator, _ = build_accelerator(TrainConfig())
    model, tokenizer = load_model(ModelConfig(path=str(tiny_model_dir)))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    scheduler = build_scheduler(optimizer, OptimConfig(lr=1e-3), 10)
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    return accelerator, model, tokenizer, optimizer, scheduler


def assert_failed_cleanly(error: DiskFull, out: Path, needed: int) -> None:
    assert error.where == str(out) and "no space left on device" in error.what
    assert f"needs about {needed / 1024:.1f} KiB" in error.what, error.what
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "failed" and "no space left on device" in state["reason"]
    assert state["needed_bytes"] == needed
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == [], leftovers


@pytest.mark.parametrize(
    "writer",
    ["safetensors", "torch"],  # which writer meets the full disk: the weights, or torch.save's trainer state
)
def test_checkpoint_on_a_full_disk_is_one_error_and_keeps_the_previous_one(disk, trained, writer) -> None:
    accelerator, model, tokenizer, optimizer, scheduler = trained
    out = disk / "run"
    first = save_checkpoint(
        accelerator, model, tokenizer, optimizer, scheduler, out, 1, {"prompt_position": 2}
    )
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    weights = sum(p.stat().st_size for p in first.glob("*.safetensors"))
    others = sum(
        p.stat().st_size for p in first.iterdir() if p.suffix != ".safetensors" and p.suffix != ".pt"
    )
    # the weights fit and the optimizer state does not, or not even the weights
    fill(disk, weights + others + 64 * 1024 if writer == "torch" else weights // 3)
    needed = checkpoint_bytes(model, optimizer)
    with pytest.raises(DiskFull) as e:
        save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, out, 2, {"prompt_position": 4})
    assert_failed_cleanly(e.value, out, needed)
    assert f"{out}/checkpoints" not in e.value.fix and "step-1, is intact" in e.value.fix
    assert find_latest_checkpoint(out) == first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    load_weights(first, model)  # still a loadable checkpoint


def test_final_model_on_a_full_disk_is_one_error(disk, trained) -> None:
    accelerator, model, tokenizer, _, _ = trained
    out = disk / "run"
    out.mkdir()
    fill(disk, 16 * 1024)
    with pytest.raises(DiskFull) as e:
        save_final(accelerator, model, tokenizer, out, merge_lora=False)
    assert_failed_cleanly(e.value, out, checkpoint_bytes(model, None))
    assert not (out / "final").exists()
    assert "no checkpoint was kept" in e.value.fix


def test_sft_stops_on_a_full_disk_and_resumes_once_there_is_space(disk, tiny_model_dir) -> None:
    from r1lab.config import SFTConfig, validate
    from r1lab.stages.sft import run_sft

    data = disk.parent / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"{a} + 1 =", "completion": f" {a + 1}"}) + "\n" for a in range(8))
    )
    out = disk / "sft"
    cfg = validate(
        SFTConfig,
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"path": str(data), "max_length": 32},
            "train": {"output_dir": str(out), "batch_size": 2, "max_steps": 3, "save_every": 1},
        },
    )
    fill(
        disk, 600 * 1024
    )  # one checkpoint (~410 KiB: weights, 2x them of Adam state, tokenizer) fits, not two
    with pytest.raises(DiskFull) as e:
        run_sft(cfg)
    assert "checkpoint step-2" in e.value.what and "step-1, is intact" in e.value.fix
    assert json.loads((out / "state.json").read_text())["status"] == "failed"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-1"]
    (disk / "filler").unlink()
    resumed = run_sft(cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": True})}))
    assert resumed == out / "final" and json.loads((out / "state.json").read_text())["status"] == "complete"


def test_rl_keeps_state_failed_after_a_full_disk(disk, tiny_model_dir) -> None:
    from rl_testkit import rl_config

    from r1lab.stages.rl import run_rl

    cfg = rl_config(
        disk.parent / "rl",
        tiny_model_dir,
        {"train": {"output_dir": str(disk / "rl"), "max_steps": 3, "save_every": 1}},
    )
    fill(disk, 600 * 1024)
    with pytest.raises(DiskFull):
        run_rl(cfg)
    state = json.loads((disk / "rl" / "state.json").read_text())
    assert state["status"] == "failed" and "checkpoint step-2" in state["reason"]  # not "interrupted"
    assert [p.name for p in (disk / "rl" / "checkpoints").iterdir()] == ["step-1"]
