"""Shared set-up for the RL stage tests: a prompt file, a user reward file and a small RLConfig on the tiny model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from r1lab.config import RLConfig, deep_merge, validate

# A user reward file, loaded by the runner as "path/file.py:fn" (which also exercises the file loader).
# `target`: 1 when the completion contains the target token (the random tiny model does so in a few percent of
# samples, enough signal to learn it within a few dozen steps). `length`: a dense reward for tests that need
# non-zero advantages from the first step. `exploding`: huge but finite rewards for the prompts numbered in `bad`, so the
# dr_grpo advantages (no std division) overflow the loss and gradients, as a runaway reward would.
REWARDS = """
def target(completion, *, prompt, answer, **columns):
    return float(answer in completion)

def length(completion, **columns):
    return len(completion) / 40

def exploding(completion, *, prompt, answer, bad=(), **columns):
    index = int(prompt.rstrip(".").split()[-1])
    if index in bad:
        return 3e38 if len(completion) % 2 else -3e38
    return float(answer in completion)

def wrong_type(completion, *, prompt, **columns):
    return "1.0"
"""

TARGET = "7"


def single_thread() -> Iterator[None]:
    """Run torch on one thread for the test's duration. On a shared, oversubscribed CPU the tiny model's
    matmuls are 5-30x slower with 2 threads (the threads wait for each other) than with one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_inputs(tmp_path: Path, n_prompts: int = 8) -> tuple[Path, Path]:
    """A prompt file (columns prompt, answer) and the reward file; returns their paths."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "prompts.jsonl"
    topics = ["animals", "colours", "numbers", "the sea", "a dog", "a fox", "the sky", "a tree"]
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Write about {topics[i % len(topics)]} {i}.", "answer": TARGET}) + "\n"
            for i in range(n_prompts)
        )
    )
    rewards = tmp_path / "user_rewards.py"
    rewards.write_text(REWARDS)
    return data, rewards


def rl_config(tmp_path: Path, model_dir: Path, overrides: dict[str, Any] | None = None) -> RLConfig:
    data, rewards = write_inputs(tmp_path)
    base = {
        "model": {"path": str(model_dir)},
        "data": {"path": str(data), "format": "prompt"},
        "rewards": [{"name": f"{rewards}:target"}],
        "rollout": {"n": 4, "max_new_tokens": 8, "temperature": 1.0},
        "prompts_per_step": 2,
        "optim": {"lr": 1e-3, "scheduler": "constant", "max_grad_norm": 1.0},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 4, "seed": 0},
        "samples_every": 1,
    }
    return validate(RLConfig, deep_merge(base, overrides or {}))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def weights(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out
