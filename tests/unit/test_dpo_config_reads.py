"""Every key DPOConfig accepts is read by the DPO stage (or refused by its validators), with the recorder of
test_config_reads.py: the stage runs a step or two on the tiny model over variants that cover its branches."""

from __future__ import annotations

import json

import pytest
from rl_testkit import single_thread
from test_config_reads import reads, unread  # noqa: F401 (the `reads` fixture)

from r1lab.config import DPOConfig, deep_merge, validate
from r1lab.stages.dpo import run_dpo

ALLOWED_HERE = {"DPOConfig.kind"}  # the stage discriminator: the pipeline reads it to pick the stage


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_every_dpo_key_is_read(tmp_path, tiny_model_dir, reads):  # noqa: F811
    data = tmp_path / "pairs.jsonl"
    rows = [
        {"question": f"What is {i} + {i}?", "good": f"{2 * i}.", "bad": "no " * (1 + i)} for i in range(8)
    ]
    rows.append({"question": "What is 1 + 1?", "good": "2. " * 60, "bad": "no"})  # overlong
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parity = "def even(completion, **_):\n    return float(len(completion) % 2 == 0)\n"
    (tmp_path / "parity.py").write_text(parity)
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    base = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"path": str(data), "max_length": 48, "columns": columns},
    }
    variants = [
        {  # full fine-tuning, cDPO, accumulation, warmup from warmup_ratio, checkpoints, held-out fraction
            "label_smoothing": 0.1,
            "rpo_alpha": 0.5,
            "data": {"overlong": "truncate", "system_prompt": "Be brief.", "eval_fraction": 0.25},
            "optim": {"warmup_ratio": 0.5},
            "train": {"output_dir": str(tmp_path / "a"), "max_steps": 2, "batch_size": 2, "grad_accum": 2,
                      "save_every": 1, "save_total_limit": 1, "eval_every": 1},
        },
        {  # LoRA (merged on save) with the adapter-disabled reference, epochs instead of max_steps
            "model": {"lora": {"r": 2, "alpha": 4, "merge_on_save": True}},
            "reference": "adapter_disabled",
            "data": {"overlong": "drop", "limit": 8, "eval_path": str(held)},
            "train": {"output_dir": str(tmp_path / "b"), "epochs": 0.5, "batch_size": 2},
        },
        {  # reference-free with its margin
            "loss": "simpo",
            "simpo_gamma": 0.3,
            "train": {"output_dir": str(tmp_path / "c"), "max_steps": 1, "batch_size": 2},
        },
        {  # on-policy pairs sampled from the model on the same file's prompts (r1lab.stages.dpo_onpolicy)
            "pairs": {"n": 4, "temperature": 1.0, "max_new_tokens": 6, "batch_size": 4, "chosen": "verified",
                      "offset": 1, "limit": 2, "pairs_per_prompt": 1, "rewards": [f"{tmp_path}/parity.py:even"]},
            "train": {"output_dir": str(tmp_path / "d"), "max_steps": 1, "batch_size": 1},
        },
    ]  # fmt: skip
    configs = [validate(DPOConfig, deep_merge(base, v)) for v in variants]
    for cfg in configs:
        run_dpo(cfg)
    assert [key for key in unread(DPOConfig, configs, reads) if key not in ALLOWED_HERE] == []
