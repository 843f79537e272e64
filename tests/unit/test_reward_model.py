"""The reward_model stage on the tiny model: it learns a separable labelling (pointwise and pairwise), its final/
loads with AutoModelForSequenceClassification and scores as `score(...)` does, resume after a stop, LoRA, the
bad inputs, and load_reward_model on folders that are not reward models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from rl_testkit import single_thread
from safetensors.torch import load_file

from r1lab.config import RewardModelConfig, apply_overrides, validate
from r1lab.errors import UserError
from r1lab.rewards.reward_model_io import load_reward_model, score
from r1lab.stages.reward_model import run_reward_model
from r1lab.training.interrupt import StopFlag, StopRequested


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def write_rows(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def yes_no_rows(n: int = 8) -> list[dict[str, Any]]:
    """'yes' is good (1), 'no' bad (0), on the same prompts: separable by the last tokens alone."""
    rows = []
    for i in range(n):
        rows.append({"prompt": f"Is {i} + {i} = {2 * i}?", "completion": "yes", "label": 1})
        rows.append({"prompt": f"Is {i} + {i} = {2 * i}?", "completion": "no", "label": 0})
    return rows


def make_cfg(
    tmp_path: Path, model_dir: Path, name: str, *overrides: str, rows: Any = None
) -> RewardModelConfig:
    data = write_rows(tmp_path / f"{name}.jsonl", yes_no_rows() if rows is None else rows)
    base = {
        "model": {"path": str(model_dir)},
        "data": {"path": data, "max_length": 64},
        "optim": {"lr": 3e-3, "scheduler": "constant"},
        "train": {"output_dir": str(tmp_path / name), "batch_size": 4, "max_steps": 16},
    }
    return validate(RewardModelConfig, apply_overrides(base, list(overrides)))


def rows_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_learns_a_separable_labelling_and_final_loads_with_transformers(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = make_cfg(
        tmp_path, tiny_model_dir, "bce", "data.eval_fraction=0.25", "train.eval_every=8", "train.max_steps=24",
        "optim.lr=1e-2",
    )  # fmt: skip
    final = run_reward_model(cfg)
    out = Path(cfg.train.output_dir)
    train_rows = [r for r in rows_of(out) if "accuracy" in r]
    assert train_rows[0]["accuracy"] < 1.0 and train_rows[-1]["loss"] < train_rows[0]["loss"] / 5
    results = json.loads((out / "results.json").read_text())["metrics"]
    assert results["eval/accuracy"] == 1.0 and results["eval/auc"] == 1.0
    assert 0 <= results["eval/ece"] <= 1
    assert [r["step"] for r in rows_of(out) if "eval/auc" in r] == [8, 16, 24]
    meta = json.loads((final / "reward_model.json").read_text())
    assert meta["kind"] == "orm" and meta["loss"] == "bce" and meta["base_model"] == str(tiny_model_dir)

    plain = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Is 3 + 3 = 6?"}, {"role": "assistant", "content": "yes"}],
        tokenize=False,
    )
    with torch.no_grad():
        direct = plain(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    model, tok, loaded_meta = load_reward_model(final)
    assert loaded_meta == meta
    prompts, completions = ["Is 3 + 3 = 6?", "Is 3 + 3 = 6?", "Is 11 + 11 = 22?"], ["yes", "no", "yes"]
    scores = score(model, tok, prompts, completions, batch_size=2)  # padded batches
    assert scores[0] == pytest.approx(direct, abs=1e-5)
    assert scores[0] > 0 > scores[1] and scores[2] > 0
    rows = yes_no_rows()  # every training (and held-out) row: the final model separates them all
    rewards = score(model, tok, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    assert [int(r > 0) for r in rewards] == [r["label"] for r in rows]


def test_pairwise_bradley_terry_learns_the_preference(tmp_path, tiny_model_dir) -> None:
    pairs = [{"prompt": f"Is {i} + {i} = {2 * i}?", "chosen": "yes", "rejected": "no"} for i in range(8)]
    cfg = make_cfg(
        tmp_path, tiny_model_dir, "bt", "loss=bradley_terry", "data.eval_fraction=0.25", "train.max_steps=8",
        "train.batch_size=2", "train.grad_accum=2", rows=pairs,
    )  # fmt: skip
    final = run_reward_model(cfg)
    results = json.loads((Path(cfg.train.output_dir) / "results.json").read_text())["metrics"]
    assert results["eval/accuracy"] == 1.0 and results["eval/auc"] == 1.0
    model, tok, meta = load_reward_model(final)
    assert meta["loss"] == "bradley_terry"
    chosen, rejected = score(model, tok, ["Is 5 + 5 = 10?"] * 2, ["yes", "no"])
    assert chosen > rejected


def test_lora_trains_the_score_head_and_final_is_merged(tmp_path, tiny_model_dir) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, "lora", "model.lora.r=4", "model.lora.alpha=8", "optim.lr=1e-2")
    final = run_reward_model(cfg)
    assert (final / "model.safetensors").is_file() and not (final / "adapter_config.json").exists()
    model, tok, _ = load_reward_model(final)
    good, bad = score(model, tok, ["Is 2 + 2 = 4?"] * 2, ["yes", "no"])
    assert good > bad
    with pytest.raises(UserError, match="merge_on_save"):
        make_cfg(tmp_path, tiny_model_dir, "lora2", "model.lora.merge_on_save=true")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_after_a_stop_matches_a_straight_run(tmp_path, tiny_model_dir, monkeypatch, lora) -> None:
    extra = ["model.lora.r=4", "model.lora.dropout=0.3", "optim.lr=1e-2"] if lora else []  # dropout: RNG
    straight = run_reward_model(make_cfg(tmp_path, tiny_model_dir, "straight", "train.max_steps=4", *extra))
    cfg = make_cfg(tmp_path, tiny_model_dir, "stopped", "train.max_steps=4", *extra)
    calls = []
    original = StopFlag.check

    def stop_after_two(self: StopFlag, accelerator: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise StopRequested
        original(self, accelerator)

    monkeypatch.setattr(StopFlag, "check", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_reward_model(cfg)
    monkeypatch.setattr(StopFlag, "check", original)
    out = Path(cfg.train.output_dir)
    assert json.loads((out / "state.json").read_text())["status"] == "interrupted"
    assert (out / "checkpoints" / "step-2").is_dir()
    resumed = run_reward_model(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "auto"})})
    )
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert [r["step"] for r in rows_of(out)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("rows", "overrides", "match"),
    [
        (
            [{"prompt": "a", "completion": "yes", "label": 1}] * 8,
            [],
            "have label 1: a reward model needs both",
        ),
        ([*yes_no_rows(3), {"prompt": "a", "completion": "b", "label": 2}], [], r"label 2 is not 0 or 1"),
        ([*yes_no_rows(3), {"prompt": "a", "completion": "b", "label": "1"}], [], r"label '1' is not 0 or 1"),
        ([*yes_no_rows(3), {"prompt": "a", "completion": "b"}], [], "a row has no label column 'label'"),
        ([*yes_no_rows(3), {"prompt": "a", "label": 0}], [], "a record has no column completion"),
        ([{"prompt": "a", "chosen": "x", "rejected": "y"}] * 4, [], "holds preference pairs"),
        (yes_no_rows(3), ["loss=bradley_terry"], "trains on pairs, but"),
        ([{"prompt": "a"}] * 4, [], "is in format 'prompt'"),
    ],
    ids=["one-class", "label-2", "label-str", "no-label", "no-completion", "pairs-bce", "rows-bt", "prompts"],
)
def test_bad_input_names_the_problem(tmp_path, tiny_model_dir, rows, overrides, match) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, "bad", *overrides, rows=rows)
    with pytest.raises(UserError, match=match) as info:
        run_reward_model(cfg)
    if match.startswith("label") or "no label" in match:
        assert info.value.where.startswith(f"{tmp_path / 'bad.jsonl'}:7")  # the line of the bad row
    assert not (tmp_path / "bad" / "final").exists()


def test_load_reward_model_says_what_a_folder_is(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(
        UserError, match=r"is a causal LM .*not a reward model; train one with kind: reward_model"
    ):
        load_reward_model(tiny_model_dir)
    with pytest.raises(UserError, match="holds no model"):
        load_reward_model(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_reward_model(tmp_path / "nowhere")
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", run / "final" / "config.json")
    (run / "final" / "reward_model.json").write_text("{}")
    with pytest.raises(UserError, match=r"is a run folder.*final/"):
        load_reward_model(run)


@pytest.mark.multiproc
def test_two_processes_match_one(tmp_path, tiny_model_dir) -> None:
    import os
    import subprocess
    import sys

    from test_sft_processes import write_config  # any stage config: its dump with train keys replaced

    cfg = make_cfg(tmp_path, tiny_model_dir, "one", "train.max_steps=3", "loss=bradley_terry", rows=[
        {"prompt": f"Is {i} + {i} = {2 * i}?", "chosen": "yes", "rejected": "no " * (i % 3 + 1)} for i in range(8)
    ])  # fmt: skip
    one = run_reward_model(cfg)
    out = tmp_path / "ddp"
    config = write_config(cfg, tmp_path / "rm.yaml", output_dir=str(out), batch_size=2)  # 2 x 2 == 1 x 4
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run(
        [*torchrun, "-m", "r1lab.cli", "reward-model", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = load_file(one / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6  # gloo sums in another order
    losses = [r["loss"] for r in rows_of(out)]
    assert losses == pytest.approx([r["loss"] for r in rows_of(Path(cfg.train.output_dir))], rel=1e-5)


def test_load_reward_model_on_an_adapter_and_on_a_foreign_one_label_model(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "some/base"}))
    with pytest.raises(UserError, match=r"is a LoRA adapter \(of some/base\), not a reward model"):
        load_reward_model(adapter)
    two = tmp_path / "two-labels"  # a classifier, but not a scalar reward
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).save_pretrained(two)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(two)
    with pytest.raises(UserError, match="LlamaForSequenceClassification model, not a one-label reward model"):
        load_reward_model(two)
    one = tmp_path / "one-label"  # from elsewhere, without reward_model.json: scored without a system prompt
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(one)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(one)
    model, tok, meta = load_reward_model(one)
    assert meta["kind"] == "orm" and meta["system_prompt"] is None
    assert len(score(model, tok, ["a", "b c"], ["yes", "no"])) == 2
