"""The SFT stage as real processes: SIGKILL then resume, Ctrl-C then resume, and 2 processes via torchrun.

Each compares final parameters with a straight single-process run of the same config (CPU fp32).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_sft import _one_thread, assert_same, make_cfg, weights  # noqa: F401 (autouse fixture)

from process_testkit import start_paused, wait_until_paused
from r1lab.config import SFTConfig
from r1lab.stages.sft import run_sft

STEPS = 6


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_model_dir) -> tuple[Path, SFTConfig]:
    """One uninterrupted single-process run: (its final folder, its config)."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = make_cfg(tmp, tiny_model_dir, "run", f"train.max_steps={STEPS}")
    return run_sft(cfg), cfg


def write_config(cfg: SFTConfig, path: Path, **train: object) -> Path:
    data = cfg.model_dump(mode="json")
    data["train"].update(train)
    path.write_text(yaml.safe_dump(data))
    return path


def start_paused_sft(config: Path, tmp_path: Path, pause_at: int) -> subprocess.Popen:
    return start_paused(
        ["sft", str(config)], tmp_path, pause_at, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def resume(cfg: SFTConfig, out: Path) -> Path:
    train = cfg.train.model_copy(update={"output_dir": str(out), "resume": True})
    return run_sft(cfg.model_copy(update={"train": train}))


def test_sigkill_after_checkpoint_then_resume_matches_straight_run(tmp_path, straight) -> None:
    final, cfg = straight
    out = tmp_path / "killed"
    config = write_config(cfg, tmp_path / "sft.yaml", output_dir=str(out), save_every=3)
    proc = start_paused_sft(config, tmp_path, pause_at=4)  # held in step 4, after the step-3 checkpoint
    wait_until_paused(proc, tmp_path, 4)
    assert (out / "checkpoints" / "step-3" / "trainer_state.json").is_file()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # the kill landed at the pause (after step 4's log), whatever the machine's speed
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert proc.returncode == -signal.SIGKILL and not (out / "final").exists()
    assert json.loads((out / "state.json").read_text())["status"] == "running"  # it died, it did not finish
    assert_same(weights(final), weights(resume(cfg, out)), atol=1e-6)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stop_signal_writes_a_checkpoint_and_resume_matches_straight_run(tmp_path, straight, sig) -> None:
    final, cfg = straight
    out = tmp_path / "interrupted"
    config = write_config(cfg, tmp_path / "sft.yaml", output_dir=str(out))  # no periodic checkpoints
    proc = start_paused_sft(config, tmp_path, pause_at=2)  # held after step 2 until the signal
    wait_until_paused(proc, tmp_path, 2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "continue with --resume" in stderr and "Traceback" not in stderr
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted" and 2 <= state["step"] < STEPS
    assert state["step"] == 2  # the signal reached the run at its pause, after step 2
    assert (out / "checkpoints" / f"step-{state['step']}" / "trainer_state.json").is_file()
    assert_same(weights(final), weights(resume(cfg, out)), atol=1e-6)


@pytest.mark.multiproc
def test_two_processes_match_one_and_resume(tmp_path, straight) -> None:
    final, cfg = straight
    out = tmp_path / "ddp"
    # Same global batch: 2 processes x 2 sequences == 1 process x 4.
    config = write_config(cfg, tmp_path / "sft.yaml", output_dir=str(out), batch_size=2, save_every=3)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, "-m", "r1lab.cli", "sft", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    # Tolerance: the gloo all-reduce sums gradients in another order than one process does (~1e-7 here).
    first = weights(out / "final")
    assert_same(weights(final), first, atol=1e-6)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # rank 0 alone writes

    shutil.rmtree(out / "checkpoints" / f"step-{STEPS}")
    shutil.rmtree(out / "final")
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    assert_same(first, weights(out / "final"), atol=1e-6)
