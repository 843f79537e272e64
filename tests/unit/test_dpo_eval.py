"""Held-out evaluation of the DPO stage on the tiny model: eval/* metrics against a hand recomputation with the
plain forward, the held-out reference rows in the cached table, the on-line (LoRA) reference against the
precomputed one, and the eval_fraction split (disjoint, seeded, places naming the real lines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rl_testkit import single_thread
from safetensors.torch import load_file
from test_dpo import make_cfg, plain_logps, rows, write_pairs
from transformers import AutoModelForCausalLM

from r1lab.config import DataConfig, ModelConfig
from r1lab.data.preference import build_preference_dataset, read_preference_data
from r1lab.errors import UserError
from r1lab.models import load_tokenizer
from r1lab.stages.dpo import run_dpo
from r1lab.stages.dpo_forward import REFERENCE_FILE

EVAL_KEYS = ["eval/loss", "eval/rewards/chosen", "eval/rewards/rejected", "eval/rewards/margins"]
EVAL_KEYS += ["eval/rewards/accuracies", "eval/logps/chosen", "eval/logps/rejected"]


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def held_out_file(tmp_path: Path) -> Path:
    """Five pairs unlike the training ones (other sums, a different rejected answer)."""
    path = tmp_path / "held.jsonl"
    with path.open("w") as f:
        for i in range(5):
            a, b = i + 3, 2 * i + 1
            row = {
                "prompt": f"What is {a} + {b}?",
                "chosen": f"The answer is {a + b}.",
                "rejected": f"{a}" * (i + 1),
            }
            f.write(json.dumps(row) + "\n")
    return path


def eval_rows(out: Path) -> list[dict]:
    return [r for r in rows(out) if "eval/loss" in r]


def test_eval_metrics_equal_a_hand_recomputation(tmp_path, tiny_model_dir) -> None:
    held = held_out_file(tmp_path)
    cfg = make_cfg(
        tmp_path, tiny_model_dir, "run", f"data.eval_path={held}", "train.eval_every=2", "train.max_steps=3",
        "optim.lr=3e-3", "beta=0.5",
    )  # fmt: skip
    final = run_dpo(cfg)
    out = Path(cfg.train.output_dir)
    logged = eval_rows(out)
    assert [r["step"] for r in logged] == [2, 3]  # every eval_every steps, and after the last one
    assert all(sorted(k for k in r if k.startswith("eval/")) == sorted(EVAL_KEYS) for r in logged)

    tokenizer = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    data = DataConfig(path=str(held), max_length=96)
    pairs = build_preference_dataset(data, tokenizer, read_preference_data(data))
    policy = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logps = {
            (name, side): torch.stack([plain_logps(model, ex, side) for ex in pairs])
            for name, model in (("policy", policy), ("ref", base))
            for side in ("chosen", "rejected")
        }
    good = 0.5 * (logps["policy", "chosen"] - logps["ref", "chosen"])
    bad = 0.5 * (logps["policy", "rejected"] - logps["ref", "rejected"])
    assert (good - bad).abs().min() > 1e-3  # the model moved: every held-out reward and margin is informative
    expected = {
        "eval/loss": -F.logsigmoid(good - bad).mean(),  # sigmoid DPO: -log σ(βΔ)
        "eval/rewards/chosen": good.mean(),
        "eval/rewards/rejected": bad.mean(),
        "eval/rewards/margins": (good - bad).mean(),
        "eval/rewards/accuracies": (good > bad).float().mean(),
        "eval/logps/chosen": logps["policy", "chosen"].mean(),
        "eval/logps/rejected": logps["policy", "rejected"].mean(),
    }
    for key, value in expected.items():
        assert logged[-1][key] == pytest.approx(value.item(), rel=1e-5, abs=1e-5), key

    # the held-out pairs' reference rows follow the training pairs' in the one cached table
    table = load_file(out / REFERENCE_FILE)["logps"]
    assert table.shape == (16 + 5, 2)
    ref = torch.stack([logps["ref", "chosen"], logps["ref", "rejected"]], dim=1)
    torch.testing.assert_close(table[16:], ref, rtol=1e-6, atol=0)


def test_online_reference_eval_equals_the_precomputed_one(tmp_path, tiny_model_dir) -> None:
    lora = ["model.lora.r=4", "model.lora.dropout=0", "optim.lr=1e-3", "train.max_steps=2"]
    held = ["data.eval_fraction=0.25", "train.eval_every=1"]
    pre = make_cfg(tmp_path, tiny_model_dir, "pre", *lora, *held)
    live = make_cfg(tmp_path, tiny_model_dir, "live", *lora, *held, "reference=adapter_disabled")
    run_dpo(pre)
    run_dpo(live)
    a, b = eval_rows(Path(pre.train.output_dir)), eval_rows(Path(live.train.output_dir))
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    assert a[0]["eval/rewards/margins"] != 0  # after one update the policy differs from its reference
    for x, y in zip(a, b, strict=True):
        for key in EVAL_KEYS:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
    table = load_file(Path(pre.train.output_dir) / REFERENCE_FILE)["logps"]
    assert table.shape == (16, 2)  # 12 training + 4 held-out pairs


def test_eval_fraction_holds_out_seeded_disjoint_pairs(tmp_path) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", n=16)
    cfg = DataConfig(path=str(path), eval_fraction=0.25)
    read = read_preference_data(cfg, seed=3)
    assert read.eval is not None and (len(read.pairs), len(read.eval.pairs)) == (12, 4)
    again = read_preference_data(cfg, seed=3)
    assert [p for p, _ in again.eval.pairs] == [p for p, _ in read.eval.pairs]  # the seed fixes the split
    lines = path.read_text().splitlines()
    places = [p for p, _ in read.pairs] + [p for p, _ in read.eval.pairs]
    assert sorted(places, key=lambda p: int(p.rsplit(":", 1)[1])) == [f"{path}:{i}" for i in range(1, 17)]
    for place, pair in read.pairs + read.eval.pairs:  # each place names the line the pair was read from
        line = int(place.rsplit(":", 1)[1])
        assert pair.prompt[-1]["content"] == json.loads(lines[line - 1])["prompt"]


def test_a_bad_held_out_record_names_its_file_and_line(tmp_path) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", n=8)
    held = tmp_path / "held.jsonl"
    good, bad = (
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        {"prompt": "a", "chosen": "b"},
    )
    held.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError, match="no column rejected") as error:
        read_preference_data(DataConfig(path=str(path), eval_path=str(held)))
    assert error.value.where == f"{held}:2"
    # a bad line of a file split by eval_fraction is named by its own line, in the training or held-out part
    lines = path.read_text().splitlines()
    lines[6] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    for seed in range(4):
        with pytest.raises(UserError, match="no column rejected") as error:
            read_preference_data(DataConfig(path=str(path), eval_fraction=0.25), seed=seed)
        assert error.value.where == f"{path}:7"
