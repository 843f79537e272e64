"""A killed RL run, resumed, ends with the same parameters as an uninterrupted one (CPU fp32): the optimizer,
scheduler, prompt order and RNG all come back from the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import torch
from rl_testkit import read_metrics, rl_config, single_thread, weights

from process_testkit import start_paused, wait_until_paused
from r1lab.config import dump_config
from r1lab.stages.rl import run_rl


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


STEPS = 6


def test_killed_run_resumes_to_the_same_parameters(tmp_path, tiny_model_dir):
    settings = {
        "train": {"max_steps": STEPS, "save_every": 2},
        "rollout": {"n": 4, "max_new_tokens": 8},
        "optim": {"lr": 1e-2, "scheduler": "cosine", "warmup_steps": 2},  # the schedule must resume too
        "samples_every": 1,
    }
    # the reference: an uninterrupted run
    plain = rl_config(tmp_path / "plain", tiny_model_dir, settings)
    run_rl(plain)

    # the same run in a child process that pauses in step 3 (after its step-2 checkpoint), killed (SIGKILL) there
    cfg = rl_config(tmp_path / "killed", tiny_model_dir, settings)
    dump_config(cfg, tmp_path / "killed.yaml")
    run = tmp_path / "killed" / "run"
    child = start_paused(
        ["rl", str(tmp_path / "killed.yaml")],
        tmp_path,
        pause_at=3,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill takes its reward worker down with it
    )
    try:
        wait_until_paused(child, tmp_path, 3)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert (run / "checkpoints" / "step-2").is_dir() and not (run / "final").exists()
    assert len(read_metrics(run)) == 3  # the kill landed at the pause (after step 3's log), at any speed
    assert json.loads((run / "state.json").read_text())["status"] == "running"  # killed: no clean shutdown

    resumed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": True})})
    final = run_rl(resumed)

    a, b = weights(tmp_path / "plain" / "run" / "final"), weights(final)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the logs read as one run: every step once, same rewards as the uninterrupted run
    plain_metrics, resumed_metrics = read_metrics(tmp_path / "plain" / "run"), read_metrics(run)
    assert [m["step"] for m in resumed_metrics] == list(range(1, STEPS + 1))
    assert [m["reward/mean"] for m in resumed_metrics] == [m["reward/mean"] for m in plain_metrics]
    samples = [json.loads(line)["step"] for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples == [step for step in range(1, STEPS + 1) for _ in range(2 * 4)]  # 2 prompts x G = 4
