"""The process reward model (PRM): the per-step loss and where its scores are read, a tiny PRM that learns a
separable step labelling, its saved folder read back by score_steps (equal to the held-out scores of training and
to the plain classifier on each step prefix), refusal by the ORM loaders, Monte-Carlo step labels
(`r1lab data prm-labels`) on a scripted engine whose success after each prefix is known, and the bad inputs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from rl_testkit import single_thread
from test_reward_model import write_rows

from r1lab.algorithms.reward_losses import first_error, prm_bce
from r1lab.config import RewardModelConfig, apply_overrides, validate
from r1lab.data.prm_data import step_ids, step_texts
from r1lab.errors import UserError
from r1lab.rewards.reward_model_io import load_reward_model, score_steps
from r1lab.stages.reward_model import run_reward_model


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def good_bad_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Three steps a row, each 'good' (label 1) or 'bad' (0) at random: separable at each step's end."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kinds = [rng.choice(["good", "bad"]) for _ in range(3)]
        steps = [f"{i} + {k} is {kind}" for k, kind in enumerate(kinds)]
        rows.append({"prompt": f"Add {i}.", "steps": steps, "labels": [int(k == "good") for k in kinds]})
    return rows


def make_cfg(tmp_path: Path, model_dir: Path, name: str, rows: Any, *overrides: str) -> RewardModelConfig:
    base = {
        "loss": "prm_bce",
        "model": {"path": str(model_dir)},
        "data": {"path": write_rows(tmp_path / f"{name}.jsonl", rows), "max_length": 96},
        "optim": {"lr": 1e-2, "scheduler": "constant"},
        "train": {"output_dir": str(tmp_path / name), "batch_size": 4, "max_steps": 4},
    }
    return validate(RewardModelConfig, apply_overrides(base, list(overrides)))


def test_prm_bce_and_first_error_by_hand() -> None:
    scores = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, -1.0, -1.0]])  # the second row has one step

    def bce(s: float, y: float) -> float:
        p = 1 / (1 + math.exp(-s))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    want = [(bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 1)) / 3, bce(0.3, 0)]
    assert prm_bce(scores, labels).tolist() == pytest.approx(want, abs=1e-6)
    assert first_error(torch.tensor([[1, 0, 0], [1, 1, 1], [0, -1, -1], [1, 1, -1]])).tolist() == [1, 3, 0, 3]
    with pytest.raises(ValueError, match="no labelled step"):
        prm_bce(scores, torch.full((2, 3), -1.0))


def test_step_positions_token_by_token(tiny_tokenizer) -> None:
    prompt = [{"role": "user", "content": "Make 14 from 3, 4, 2."}]
    steps = ["3 + 4 = 7\n", "7 * 2 = 14", "Answer: 14"]  # the first already ends with its separator
    assert step_texts(steps, "\n") == ["3 + 4 = 7\n", "7 * 2 = 14\n", "Answer: 14\n"]
    ids, positions = step_ids(tiny_tokenizer, prompt, steps, "\n")
    assert len(positions) == 3 and positions == sorted(positions)
    for k, p in enumerate(positions):
        assert tiny_tokenizer.decode([ids[p]]) == "\n"  # the separator's own token
        head = tiny_tokenizer.decode(ids[: p + 1])  # what the score at p has seen: up to step k's separator
        assert head.endswith("".join(step_texts(steps, "\n")[: k + 1])) and head.count("\n") == 4 + k
    assert tiny_tokenizer.decode(ids[positions[-1] + 1 :]) == "<|im_end|>\n"
    with pytest.raises(ValueError, match="merged"):  # byte-level BPE glues a space to the next word
        step_ids(tiny_tokenizer, prompt, ["3 + 4 = 7", "7 * 2 = 14"], " ")


def test_a_tiny_prm_learns_good_and_bad_steps_and_reloads(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoModelForSequenceClassification

    held_rows = good_bad_rows(6, seed=1)
    held = write_rows(tmp_path / "held.jsonl", held_rows)
    cfg = make_cfg(tmp_path, tiny_model_dir, "prm", good_bad_rows(24, seed=0), f"data.eval_path={held}",
                   "train.max_steps=30", "train.eval_every=15")  # fmt: skip
    final = run_reward_model(cfg)
    out = Path(cfg.train.output_dir)
    report = json.loads((out / "results.json").read_text())
    results = report["metrics"]
    assert report["held_out_steps"] == 18
    assert results["eval/step_accuracy"] == 1.0 and results["eval/step_auc"] == 1.0
    assert results["eval/first_error_accuracy"] == 1.0 and 0 <= results["eval/step_ece"] <= 1
    meta = json.loads((final / "reward_model.json").read_text())
    assert meta["kind"] == "prm" and meta["step_sep"] == "\n" and meta["loss"] == "prm_bce"

    model, tok, loaded = load_reward_model(final, kinds=("prm",))
    assert loaded == meta
    scores = [score_steps(model, tok, r["prompt"], r["steps"]) for r in held_rows]
    as_messages = [{"role": "user", "content": held_rows[0]["prompt"]}]  # a prm-labels row's prompt
    assert score_steps(model, tok, as_messages, held_rows[0]["steps"]) == scores[0]
    assert [[int(s > 0) for s in row] for row in scores] == [r["labels"] for r in held_rows]

    def bce(s: float, y: int) -> float:
        return -math.log(1 / (1 + math.exp(-s if y else s)))

    pairs = zip(scores, held_rows, strict=True)
    losses = [sum(bce(s, y) for s, y in zip(row, r["labels"], strict=True)) / 3 for row, r in pairs]
    assert sum(losses) / len(losses) == pytest.approx(results["eval/loss"], rel=1e-4)  # training's scores

    plain = AutoModelForSequenceClassification.from_pretrained(final).eval()
    prompt = [{"role": "user", "content": held_rows[0]["prompt"]}]
    ids, positions = step_ids(tok, prompt, held_rows[0]["steps"], "\n")
    with torch.no_grad():  # causal: the score at step k is the classifier's on the sequence cut after it
        cut = [plain(input_ids=torch.tensor([ids[: p + 1]])).logits[0, 0].item() for p in positions]
    assert cut == pytest.approx(scores[0], abs=1e-5)


def test_orm_loaders_refuse_a_prm(tmp_path) -> None:
    folder = tmp_path / "prm-final"
    folder.mkdir()
    (folder / "reward_model.json").write_text(json.dumps({"kind": "prm", "step_sep": "\n"}))
    with pytest.raises(UserError, match="process reward model") as e:
        load_reward_model(folder)
    assert "score_steps" in e.value.fix
    from r1lab.config import RewardSpec
    from r1lab.rewards.learned import load_learned

    with pytest.raises(UserError, match="process reward model"):
        load_learned(RewardSpec(name=f"model:{folder}"))
    from r1lab.eval.scaling import load_scorers

    with pytest.raises(UserError, match="process reward model"):  # eval --select best_of_n:PRM
        load_scorers([("best_of_n", str(folder))])
    with pytest.raises(UserError, match=r"holds no model|not a reward model"):
        load_reward_model(tmp_path, kinds=("prm",))


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "p", "steps": ["a"]}, "no 'labels' column"),
        ({"prompt": "p", "labels": [1]}, "no 'steps' column"),
        ({"prompt": "p", "steps": ["a", "b"], "labels": [1]}, "2 steps but 1 labels"),
        ({"prompt": "p", "steps": ["a"], "labels": [2]}, "step label 2 is not 0 or 1"),
        ({"prompt": "p", "steps": [], "labels": []}, "non-empty list"),
        ({"prompt": "p", "completion": "a", "label": 1}, "format 'prompt_completion'"),
    ],
)
def test_bad_rows_name_their_line(tmp_path, tiny_model_dir, row, match) -> None:
    rows = [*good_bad_rows(2, seed=0), row]
    if "completion" in row:
        rows = [row, {**row, "label": 0}]
    cfg = make_cfg(tmp_path, tiny_model_dir, "bad", rows)
    with pytest.raises(UserError, match=match) as e:
        run_reward_model(cfg)
    if "completion" not in row:
        assert e.value.where.startswith(f"{tmp_path / 'bad.jsonl'}:3")


def test_one_class_and_a_merging_separator_are_refused(tmp_path, tiny_model_dir) -> None:
    rows = [{"prompt": "p", "steps": ["a", "b"], "labels": [1, 1]}] * 2
    with pytest.raises(UserError, match="needs good and bad steps"):
        run_reward_model(make_cfg(tmp_path, tiny_model_dir, "one", rows))
    cfg = make_cfg(tmp_path, tiny_model_dir, "sep", good_bad_rows(4, seed=0), "step_sep=' '")
    with pytest.raises(UserError, match="merged") as e:
        run_reward_model(cfg)
    assert "step_sep" in e.value.fix and e.value.where.startswith(f"{tmp_path / 'sep.jsonl'}:")
    with pytest.raises(UserError, match="step_sep is empty"):
        make_cfg(tmp_path, tiny_model_dir, "empty", rows, "step_sep=''")


def test_step_labels_from_known_continuations(tiny_tokenizer) -> None:
    from test_dpo_steps import COLUMNS, PROMPT, RIGHT, WRONG, ScriptedEngine, table

    from r1lab.config import RewardSpec
    from r1lab.rewards import RewardRunner
    from r1lab.rollout import SamplingParams
    from r1lab.rollout.step_values import Prefix
    from r1lab.stages.prm_labels import LabelOptions, label_samples

    prompt = Prefix(tiny_tokenizer(PROMPT)["input_ids"], PROMPT, "", COLUMNS)
    opts = LabelOptions(mc=4)
    with RewardRunner([RewardSpec(name="countdown")], isolated=False) as countdown:
        engine = ScriptedEngine(
            tiny_tokenizer, PROMPT, table([3, 1, 0])
        )  # 1 of 4 right after step 1, 0 after 2
        samples = [(prompt, WRONG, False), (prompt, RIGHT, True), (prompt, " \n", False)]
        wrong, right, blank = label_samples(
            engine, tiny_tokenizer, countdown, samples, opts, SamplingParams()
        )
        assert engine.calls == ["3 * 2 = 6\n", "3 * 2 = 6\n6 + 4 = 10\n"]  # partial prefixes only
        assert wrong == {"steps": ["3 * 2 = 6\n", "6 + 4 = 10\n", "Answer: 3 * 2 + 4"], "values": [0.25, 0.0, 0.0],
                         "labels": [1, 0, 0], "correct": False}  # fmt: skip
        assert right == {"steps": [RIGHT], "values": [1.0], "labels": [1], "correct": True} and blank is None
        engine = ScriptedEngine(tiny_tokenizer, PROMPT, table([0, 4, 2]))
        (row,) = label_samples(engine, tiny_tokenizer, countdown, samples[:1], opts, SamplingParams())
        assert row["values"] == [1.0, 0.5, 0.0] and row["labels"] == [1, 1, 0]  # the last: the verdict


PARITY = "def even(completion, **columns):\n    return float(len(completion) % 2 == 0)\n"


def test_prm_labels_command_on_the_tiny_model(tmp_path, tiny_model_dir) -> None:
    from typer.testing import CliRunner

    from r1lab.cli import app
    from r1lab.rollout.step_values import split_steps

    (tmp_path / "parity.py").write_text(PARITY)
    prompts = write_rows(
        tmp_path / "prompts.jsonl", [{"prompt": f"Say {i} and more.", "id": i} for i in range(3)]
    )
    out = tmp_path / "steps.jsonl"
    args = ["data", "prm-labels", str(tiny_model_dir), "--data", prompts, "-r", f"{tmp_path}/parity.py:even",
            "--n", "3", "--mc", "2", "--step-sep", " ", "--max-new-tokens", "10", "--seed", "1", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < len(rows) <= 9 and any(len(r["steps"]) > 1 for r in rows)
    for row in rows:
        text = "".join(row["steps"])
        assert split_steps(text, " ") == row["steps"] and row["correct"] is (len(text) % 2 == 0)
        assert len(row["values"]) == len(row["labels"]) == len(row["steps"])
        assert all(v * 2 == round(v * 2) for v in row["values"][:-1]) and row["values"][-1] == float(
            row["correct"]
        )
        assert row["labels"] == [int(v > 0) for v in row["values"]] and row["prompt"][-1]["role"] == "user"
        assert row["sampling"]["mc"] == 2 and row["sampling"]["sep"] == " " and "id" in row

    bad = [*args[:-1], str(tmp_path / "none.jsonl")]
    result = CliRunner().invoke(
        app, [*bad[: bad.index("--step-sep") + 1], "@@@@", *bad[bad.index("--step-sep") + 2 :]]
    )
    assert isinstance(result.exception, UserError) and "--step-sep" in result.exception.where
    assert (
        "no sample has more than one step" in str(result.exception) and not (tmp_path / "none.jsonl").exists()
    )
    result = CliRunner().invoke(app, [*args, "--mc", "0"])
    assert isinstance(result.exception, UserError) and "--mc must be at least 1" in str(result.exception)


def test_a_lora_prm_trains_its_head_through_the_adapter(tmp_path, tiny_model_dir) -> None:
    cfg = make_cfg(tmp_path, tiny_model_dir, "lora", good_bad_rows(8, seed=0), "model.lora.r=2",
                   "model.lora.alpha=4", "train.max_steps=6", "data.eval_fraction=0.25")  # fmt: skip
    final = run_reward_model(cfg)
    metrics = [
        json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] and "eval/step_accuracy" in metrics[-1]
    assert not (final / "adapter_config.json").exists()  # merged: a plain classifier folder
    model, tok, meta = load_reward_model(final, kinds=("prm",))
    assert meta["kind"] == "prm" and len(score_steps(model, tok, "Add 1.", ["1 is good", "2 is bad"])) == 2


def test_overlong_rows_lose_their_first_steps_or_are_dropped(tmp_path, tiny_tokenizer) -> None:
    from r1lab.config import DataConfig
    from r1lab.data.prm_data import build_step_dataset, read_step_data

    row = {"prompt": "Add 1.", "steps": ["1 is good", "2 is bad", "3 is good"], "labels": [1, 0, 1]}
    path = write_rows(tmp_path / "long.jsonl", [row, {**row, "labels": [0, 0, 1]}])
    ids, positions = step_ids(tiny_tokenizer, [{"role": "user", "content": "Add 1."}], row["steps"], "\n")
    keep = len(ids) - positions[0] - 1  # the first step's separator falls off the front
    read = read_step_data(DataConfig(path=path, max_length=keep))
    data = build_step_dataset(DataConfig(path=path, max_length=keep), tiny_tokenizer, read, "\n")
    cut = positions[0] + 1
    assert data[0] == {"ids": [ids[cut:]], "label": [0, 1], "positions": [p - cut for p in positions[1:]]}
    assert data.stats == {"total": 2, "truncated": 2, "dropped": 0, "kept": 2}
    with pytest.raises(UserError, match="no row left"):
        build_step_dataset(
            DataConfig(path=path, max_length=keep, overlong="drop"), tiny_tokenizer, read, "\n"
        )
