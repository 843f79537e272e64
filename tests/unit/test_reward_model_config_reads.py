"""Every key RewardModelConfig accepts is read by the reward_model stage (or refused by its validators), with the
recorder of test_config_reads.py: the stage runs a step or two on the tiny model over variants covering its
branches (pointwise and pairwise, full and LoRA, held-out fraction and file, truncate and drop)."""

from __future__ import annotations

import json

import pytest
from rl_testkit import single_thread
from test_config_reads import reads, unread  # noqa: F401 (the `reads` fixture)

from r1lab.config import RewardModelConfig, deep_merge, validate
from r1lab.stages.reward_model import run_reward_model

ALLOWED_HERE = {"RewardModelConfig.kind"}  # the stage discriminator: the pipeline reads it to pick the stage


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_every_reward_model_key_is_read(tmp_path, tiny_model_dir, reads):  # noqa: F811
    rows = [{"question": f"Is {i} even?", "answer": "yes" if i % 2 else "no", "ok": i % 2} for i in range(8)]
    rows.append({"question": "Is 1 even?", "answer": "no " * 60, "ok": 0})  # overlong
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Is {i} even?", "chosen": "no", "rejected": "yes"}) + "\n"
                             for i in range(0, 16, 2)))  # fmt: skip
    steps = tmp_path / "steps.jsonl"
    steps.write_text("".join(json.dumps({"prompt": f"Is {i} even?", "steps": ["so", "no"], "labels": [1, i % 2]})
                             + "\n" for i in range(4)))  # fmt: skip
    columns = {"prompt": "question", "completion": "answer", "label": "ok"}
    base = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"path": str(data), "max_length": 48},
    }
    variants = [
        {  # full fine-tuning, accumulation, warmup from warmup_ratio, checkpoints, held-out fraction, truncate
            "data": {"overlong": "truncate", "system_prompt": "Be brief.", "eval_fraction": 0.25,
                     "columns": columns},
            "optim": {"warmup_ratio": 0.5},
            "train": {"output_dir": str(tmp_path / "a"), "max_steps": 2, "batch_size": 2, "grad_accum": 2,
                      "save_every": 1, "save_total_limit": 1, "eval_every": 1},
        },
        {  # LoRA, a held-out file, drop, epochs instead of max_steps
            "model": {"lora": {"r": 2, "alpha": 4}, "gradient_checkpointing": True},
            "data": {"overlong": "drop", "limit": 8, "eval_path": str(held), "columns": columns},
            "train": {"output_dir": str(tmp_path / "b"), "epochs": 0.5, "batch_size": 2},
        },
        {  # pairwise
            "loss": "bradley_terry",
            "data": {"path": str(pairs)},
            "train": {"output_dir": str(tmp_path / "c"), "max_steps": 1, "batch_size": 2},
        },
        {  # a process reward model (per-step scores at step_sep)
            "loss": "prm_bce",
            "step_sep": ";",
            "data": {"path": str(steps)},
            "train": {"output_dir": str(tmp_path / "d"), "max_steps": 1, "batch_size": 2},
        },
    ]  # fmt: skip
    configs = [validate(RewardModelConfig, deep_merge(base, v)) for v in variants]
    for cfg in configs:
        run_reward_model(cfg)
    assert [key for key in unread(RewardModelConfig, configs, reads) if key not in ALLOWED_HERE] == []
