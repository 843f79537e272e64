"""Generative verifiers: judge rows labelled by a verifier, the verdict line and its reward, the marker carried
by SFT, and a verifier folder scored as a `model:` reward (P(correct) at the verdict)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rl_testkit import read_metrics, rl_config, write_inputs
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.config import DataConfig, RewardSpec, SFTConfig, validate
from r1lab.data import build_prompt_dataset, build_sft_dataset
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner, load_reward
from r1lab.rewards.verifier import (
    MARKER,
    judge_prompt,
    judgement,
    label_value,
    parse_verdict,
    sidecar,
    verdict_reward,
)
from r1lab.rewards.verifier_model import GenerativeVerifierReward
from r1lab.stages.rl import run_rl
from r1lab.stages.sft import run_sft
from r1lab.stages.verifier_data import VerifierDataOptions, make_verifier_data
from tiny import build_reward_model

PROBLEM = "What is 2 + 3?"
RIGHT, WRONG = "2 + 3 = 5\nAnswer: 5", "2 + 3 = 6\nAnswer: 6"


def samples_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": PROBLEM, "completion": c, "answer": a}) + "\n" for c, a in rows)
    )
    return path


def test_verdict_parser_and_reward():
    assert parse_verdict("The answer is 5.\nVerdict: correct") is True
    assert parse_verdict("Verdict: correct\n**Verdict:** Incorrect.") is False  # the last line counts
    assert parse_verdict("verdict: incorrectly") is None and parse_verdict("looks right") is None
    assert verdict_reward("x\nVerdict: correct", label="correct") == 1.0
    assert verdict_reward("x\nVerdict: correct", label=0) == 0.0
    assert verdict_reward("no verdict", label="incorrect") == 0.0
    assert label_value(True) and not label_value("Incorrect")
    with pytest.raises(ValueError, match="'maybe' is not 'correct'"):
        label_value("maybe")


def test_rows_and_labels_from_a_samples_file(tmp_path, tiny_tokenizer):
    src = samples_file(
        tmp_path / "s.jsonl", [(RIGHT, 5), (WRONG, 5), (RIGHT, 5), ("2+3\nAnswer: 5", 5), ("", 5)]
    )
    out = tmp_path / "judge.jsonl"
    counts = make_verifier_data(VerifierDataOptions(out=out, samples=str(src), rewards=["arithmetic"]))
    assert counts == {"candidates": 5, "unique": 3, "correct": 2, "incorrect": 1, "rows": 3, "rows_correct": 2,
                      "rows_incorrect": 1}  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == ["correct", "incorrect", "correct"]
    assert rows[1]["prompt"] == judge_prompt(PROBLEM, WRONG) and WRONG in rows[1]["prompt"]
    assert rows[1]["completion"] == "The candidate's final answer is 6.\nVerdict: incorrect"
    assert rows[0]["provenance"] == {"model": None, "sampling": None, "rewards": ["arithmetic"],
                                     "source": str(src), "problem": 0, "sample": "s.jsonl:1", "score": 1.0}  # fmt: skip
    assert json.loads(sidecar(out).read_text())["kind"] == "generative_verifier"
    sft = build_sft_dataset(
        DataConfig(path=str(out), shuffle=False), tiny_tokenizer
    )  # the rows as SFT reads them
    trained = [t for t, label in zip(sft[1]["input_ids"], sft[1]["labels"], strict=True) if label != -100]
    assert tiny_tokenizer.decode(trained).startswith("The candidate's final answer is 6.\nVerdict: incorrect")
    prompts = list(build_prompt_dataset(DataConfig(path=str(out), format="prompt"), tiny_tokenizer))
    assert [p.columns["label"] for p in prompts] == [
        "correct",
        "incorrect",
        "correct",
    ]  # the verdict reward's gold
    balanced = make_verifier_data(
        VerifierDataOptions(out=out, samples=str(src), rewards=["arithmetic"], balance=True)
    )
    assert (balanced["rows_correct"], balanced["rows_incorrect"]) == (1, 1)


def test_cli_labels_a_samples_file(tmp_path):
    src = samples_file(tmp_path / "s.jsonl", [(RIGHT, 5), (WRONG, 5), ("2+3\nAnswer: 5", 5)])
    out = tmp_path / "judge.jsonl"
    args = [
        "data",
        "verifier-sft",
        "--from",
        str(src),
        "--reward",
        "arithmetic",
        "--out",
        str(out),
        "--balance",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 2 judge rows (1 correct, 1 incorrect)" in " ".join(result.output.split())
    assert sorted(json.loads(line)["label"] for line in out.read_text().splitlines()) == [
        "correct",
        "incorrect",
    ]


def test_one_class_is_refused_with_counts(tmp_path):
    src = samples_file(tmp_path / "s.jsonl", [(RIGHT, 5), (RIGHT + " ", 5), ("5\nAnswer: 5", 5)])
    with pytest.raises(UserError, match="labelled 2 of 2 distinct candidates correct and 0 incorrect"):
        make_verifier_data(
            VerifierDataOptions(out=tmp_path / "o.jsonl", samples=str(src), rewards=["arithmetic"])
        )
    assert not (tmp_path / "o.jsonl").exists()
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(UserError, match="completion") as e:
        make_verifier_data(VerifierDataOptions(out=tmp_path / "o.jsonl", samples=str(tmp_path / "bad.jsonl"),
                                               rewards=["arithmetic"]))  # fmt: skip
    assert e.value.where.endswith("bad.jsonl:1")


def test_sampled_from_a_model_never_right_is_refused(tmp_path, tiny_model_dir):
    """The sampling path (the eval runner's rows): a random tiny model solves nothing, so one class only."""
    opts = VerifierDataOptions(out=tmp_path / "o.jsonl", model=str(tiny_model_dir), task="addition", limit=2, n=2,
                               max_new_tokens=4)  # fmt: skip
    with pytest.raises(UserError, match=r"labelled 0 of \d+ distinct candidates correct .*\(6 drawn\)"):
        make_verifier_data(opts)


def verifier_folder(tmp_path: Path, tiny_model_dir: Path, steps: int) -> tuple[Path, Path]:
    """An SFT stage on judge rows that all say `correct` for PROBLEM / RIGHT: returns (final/, data file)."""
    data = tmp_path / "judge.jsonl"
    row = {"prompt": judge_prompt(PROBLEM, RIGHT), "completion": judgement(RIGHT, True), "label": "correct"}
    data.write_text((json.dumps(row) + "\n") * 4)
    sidecar(data).write_text(json.dumps({"kind": "generative_verifier", "system_prompt": None}))
    cfg = validate(SFTConfig, {
        "model": {"path": str(tiny_model_dir)}, "data": {"path": str(data), "max_length": 256},
        "optim": {"lr": 1e-2, "warmup_steps": 0, "scheduler": "constant"}, "train": {"output_dir": str(tmp_path / "v"), "batch_size": 4,
                                                            "max_steps": steps}})  # fmt: skip
    return run_sft(cfg), data


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    return verifier_folder(tmp_path_factory.mktemp("verifier"), tiny_model_dir, steps=40)


def test_sft_marks_a_verifier_and_the_reward_learns_correct(tmp_path, tiny_model_dir, trained):
    final, _ = trained
    assert json.loads((final / MARKER).read_text())["kind"] == "generative_verifier"
    untrained = tmp_path / "untrained"
    shutil.copytree(tiny_model_dir, untrained)
    shutil.copy(final / MARKER, untrained / MARKER)
    before = GenerativeVerifierReward(untrained)([RIGHT], prompts=[PROBLEM])[0]
    loaded = load_reward(RewardSpec(name=f"model:{final}", kwargs={"batch_size": 2}))  # the registry path
    assert isinstance(loaded.fn, GenerativeVerifierReward) and loaded.label == "model:v"
    after = loaded.fn([RIGHT, RIGHT, WRONG], prompts=[PROBLEM] * 3)
    assert after[0] > 0.9 and after[0] > before + 0.3
    assert after[0] == pytest.approx(after[1], abs=1e-5)  # batched: the same in any row
    with RewardRunner(
        [RewardSpec(name=f"model:{final}", weight=0.5), RewardSpec(name="arithmetic")]
    ) as runner:
        scored = runner.score([RIGHT], [PROBLEM], [{"answer": 5}])  # mixed by weight with the verifier
    assert scored.total[0].item() == pytest.approx(0.5 * after[0] + 1.0, abs=1e-5)


def test_bad_verifier_folders(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match=r"is a causal LM .*verifier-sft"):
        load_reward(RewardSpec(name=f"model:{tiny_model_dir}"))
    marked = tmp_path / "marked"
    shutil.copytree(tiny_model_dir, marked)
    (marked / MARKER).write_text(json.dumps({"kind": "generative_verifier"}))
    with pytest.raises(UserError, match="no option 'sigmoid'"):
        load_reward(RewardSpec(name=f"model:{marked}", kwargs={"sigmoid": False}))
    orm = build_reward_model(tmp_path / "orm", AutoTokenizer.from_pretrained(marked))
    shutil.copy(marked / MARKER, orm / MARKER)
    with pytest.raises(UserError, match="holds a LlamaForSequenceClassification, not a causal LM"):
        load_reward(RewardSpec(name=f"model:{orm}"))
    # a tokenizer with "Verdict: correct" as one token merges the verdict word with its prefix
    tokenizer = AutoTokenizer.from_pretrained(marked)
    tokenizer.add_tokens(["Verdict: correct"])
    model = AutoModelForCausalLM.from_pretrained(marked)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(marked)
    tokenizer.save_pretrained(marked)
    with pytest.raises(UserError, match="split ambiguously: the verdict word is merged"):
        load_reward(RewardSpec(name=f"model:{marked}"))


def test_rl_on_judge_rows_and_with_the_verifier_as_reward(tmp_path, tiny_model_dir, trained):
    """The evaluator recipe's RL stage (verdict vs label on the judge rows; the marker carried to final/), and a
    policy trained on the verifier's P(correct) with the reward-hacking monitor on."""
    final, data = trained
    judge = {"data": {"path": str(data), "format": "prompt", "max_length": 256}, "rewards": [{"name": "verdict"}],
             "rollout": {"max_new_tokens": 24}, "train": {"max_steps": 1, "output_dir": str(tmp_path / "judge")}}  # fmt: skip
    out = run_rl(rl_config(tmp_path, final, judge))
    assert json.loads((out / MARKER).read_text())["kind"] == "generative_verifier"
    (row,) = read_metrics(tmp_path / "judge")
    assert row["accuracy"] == pytest.approx(row["reward/verdict/mean"])
    _, rewards = write_inputs(tmp_path)
    policy = {"rewards": [{"name": f"model:{final}"}], "reward_hacking": {"verifier": f"{rewards}:length"},
              "train": {"max_steps": 1}}  # fmt: skip
    assert not (run_rl(rl_config(tmp_path, tiny_model_dir, policy)) / MARKER).exists()
    (row,) = read_metrics(tmp_path / "run")
    assert 0 < row["hacking/learned_mean"] <= 1 and row["reward/mean"] == pytest.approx(
        row["hacking/learned_mean"]
    )


def test_eval_select_best_of_n_with_a_verifier(tmp_path, tiny_model_dir, trained):
    """`eval --select best_of_n:VERIFIER`: its scores are the reward's P(correct) of the samples the eval drew;
    a PRM selection with it is refused by name."""
    final, _ = trained
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 3?", "answer": i + 3}) + "\n" for i in range(3))
    )
    out = tmp_path / "eval"
    args = ["eval", str(tiny_model_dir), "--data", str(data), "--reward", "arithmetic", "--n", "2", "--temperature",
            "1.0", "--max-new-tokens", "6", "--out", str(out), "--select", f"best_of_n:{final}"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    sampled = [s for s in samples if s["kind"] == "sample"]
    scores = [json.loads(line)[str(final)] for line in (out / "orm_scores.jsonl").read_text().splitlines()]
    direct = GenerativeVerifierReward(final)(
        [s["completion"] for s in sampled], prompts=[s["prompt"] for s in sampled]
    )
    assert scores == pytest.approx(direct, abs=1e-5) and all(0 < s < 1 for s in scores)
    (curve,) = json.loads((out / "results.json").read_text())["scaling"]["curves"]
    assert curve["label"] == f"best_of_n:{final}"
    refused = CliRunner().invoke(app, [*args[:-1], f"prm_min:{final}"])
    assert isinstance(refused.exception, UserError) and "is a generative verifier" in str(refused.exception)
