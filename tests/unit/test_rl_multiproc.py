"""Two CPU processes over gloo train to the same parameters as one process.

Each rank generates half of the prompts; the rewards are gathered before the group normalisation, the
loss normalisers are counted over the whole batch, and DDP averages the gradients. Generation is seeded per
prompt (rollout.batch_size = 1), so both runs draw the same completions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from rl_testkit import read_metrics, rl_config, single_thread, weights

from r1lab.config import dump_config
from r1lab.stages import rl_forward
from r1lab.stages.rl import run_rl


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.mark.multiproc
@pytest.mark.parametrize(
    ("micro_batch", "bucket_overhead"),
    [(1, None), (3, 0)],  # (3, 0): micro-batches split into length buckets, several forwards per backward
)
def test_two_processes_match_one(tmp_path, tiny_model_dir, monkeypatch, micro_batch, bucket_overhead):
    length = rl_config(tmp_path / "x", tiny_model_dir).rewards[0].name.replace(":target", ":length")
    settings = {
        "rewards": [{"name": length}],  # dense: every step has non-zero advantages
        "algorithm": {"loss_agg": "token_mean", "advantage": "grpo"},
        # stop strings: completions of different lengths, for the length buckets
        "rollout": {"n": 3, "max_new_tokens": 8, "batch_size": 1, "stop": ["e", "o"]},
        "prompts_per_step": 3,
        "optim": {"lr": 1e-2},
        "train": {"max_steps": 3, "batch_size": micro_batch, "eval_every": 2},
        "data": {"eval_fraction": 0.25},  # 2 held-out prompts: each rank evaluates one
    }
    entry = ["-m", "r1lab.cli"]
    if bucket_overhead is not None:
        monkeypatch.setattr(rl_forward, "BUCKET_OVERHEAD", bucket_overhead)
        script = tmp_path / "launch.py"
        script.write_text(
            "import r1lab.stages.rl_forward as f, r1lab.cli as cli, sys\n"
            f"f.BUCKET_OVERHEAD = {bucket_overhead}\nsys.exit(cli.main())\n"
        )
        entry = [str(script)]
    # 3 prompts x 3 completions over 2 ranks: rank 0 generates 2 prompts, rank 1 one; for the update rank 0
    # takes rows 0-4 and rank 1 rows 5-8 (prompt 1's group spans both) plus, with micro-batches of 1, a
    # zero-weight micro-batch, so both ranks make 5 backward passes
    one = rl_config(tmp_path / "one", tiny_model_dir, settings)
    run_rl(one)

    two = rl_config(tmp_path / "two", tiny_model_dir, settings)
    dump_config(two, tmp_path / "two.yaml")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun is installed with torch"
    child = subprocess.Popen(
        [torchrun, "--standalone", "--nproc-per-node=2", *entry, "rl", str(tmp_path / "two.yaml")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills torchrun and both workers
    )
    try:
        _, stderr = child.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    assert child.returncode == 0, stderr[-3000:]

    r1, r2 = read_metrics(tmp_path / "one" / "run"), read_metrics(tmp_path / "two" / "run")
    m1, m2 = [m for m in r1 if "reward/mean" in m], [m for m in r2 if "reward/mean" in m]
    # the same completions and rewards, gathered from both ranks
    assert [m["reward/mean"] for m in m1] == [m["reward/mean"] for m in m2]
    assert [m["tokens_trained"] for m in m1] == [m["tokens_trained"] for m in m2]
    for a, b in zip(m1, m2, strict=True):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # the periodic eval (step 2) and the final one (step 3) gather both ranks' shares
    e1, e2 = [m for m in r1 if "eval/accuracy" in m], [m for m in r2 if "eval/accuracy" in m]
    assert [m["step"] for m in e1] == [m["step"] for m in e2] == [2, 3]
    for a, b in zip(e1, e2, strict=True):
        assert a["eval/num_problems"] == b["eval/num_problems"] == 2
        assert a["eval/mean_reward"] == pytest.approx(b["eval/mean_reward"], abs=1e-6)
    # Adam turns float-rounding differences of tiny gradients (summation order differs) into differences of
    # up to ~1e-3 of a step; each weight moved by ~3e-2 (3 steps of lr 1e-2), so 1e-4 tells a real mismatch
    w0, w1 = weights(tiny_model_dir), weights(tmp_path / "one" / "run" / "final")
    w2 = weights(tmp_path / "two" / "run" / "final")
    for key in w1:
        assert (w1[key] - w0[key]).abs().max() > 1e-2, key
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=1e-4, msg=key)
