"""The DPO stage as real processes: SIGKILL after a checkpoint then resume, and 2 processes via torchrun; each
compared with a straight single-process run of the same config (CPU fp32)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_dpo import _one_thread, assert_same, make_cfg  # noqa: F401 (autouse fixture)
from test_sft_processes import write_config  # any stage config: its dump with train keys replaced

from process_testkit import start_paused, wait_until_paused
from r1lab.config import DPOConfig
from r1lab.stages.dpo import run_dpo
from r1lab.stages.dpo_forward import REFERENCE_FILE

STEPS = 4


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_model_dir) -> tuple[Path, DPOConfig]:
    tmp = tmp_path_factory.mktemp("straight")
    cfg = make_cfg(tmp, tiny_model_dir, "run", f"train.max_steps={STEPS}", "optim.lr=1e-3")
    return run_dpo(cfg), cfg


def test_sigkill_after_checkpoint_then_resume_matches_straight_run(tmp_path, straight) -> None:
    final, cfg = straight
    out = tmp_path / "killed"
    config = write_config(cfg, tmp_path / "dpo.yaml", output_dir=str(out), save_every=2)
    proc = start_paused(
        ["dpo", str(config)], tmp_path, 3, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_until_paused(proc, tmp_path, 3)  # held in step 3, after the step-2 checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (out / "final").exists()
    assert (out / "checkpoints" / "step-2" / "trainer_state.json").is_file() and (
        out / REFERENCE_FILE
    ).is_file()
    train = cfg.train.model_copy(update={"output_dir": str(out), "resume": True})
    resumed = run_dpo(cfg.model_copy(update={"train": train}))
    assert_same(final, resumed, "model.safetensors", atol=1e-6)


@pytest.mark.multiproc
def test_two_processes_match_one(tmp_path, straight) -> None:
    final, cfg = straight
    out = tmp_path / "ddp"
    # Same global batch: 2 processes x 2 pairs == 1 process x 4.
    config = write_config(cfg, tmp_path / "dpo.yaml", output_dir=str(out), batch_size=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [*torchrun, "-m", "r1lab.cli", "dpo", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # gloo sums in another order: ~1e-7 on an AVX2 CPU, 2.3e-6 on an AVX-512 one (2026-12-02), where Adam's
    # normalisation magnifies the rounding of near-zero gradients; a wrong split or a missing average moves
    # weights by ~lr (1e-4) a step
    assert_same(final, out / "final", "model.safetensors", atol=1e-5)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    straight_rows = [json.loads(line) for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for ours, one in zip(rows, straight_rows, strict=True):  # the metrics cover both ranks' pairs
        for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen"):
            assert ours[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
