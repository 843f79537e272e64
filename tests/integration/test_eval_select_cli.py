"""`r1lab eval --select ...` end to end: a tiny random policy, a tiny random ORM folder, the curves checked
against the samples and ORM scores the eval wrote."""

from __future__ import annotations

import json
import math
import re

import pytest
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.errors import UserError
from tiny import build_reward_model


def data_with_reward(folder, problems: int):
    """`problems` prompts `say i` and a reward file whose correctness varies between samples of one problem."""
    data = folder / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"say {i}", "answer": str(i)}) + "\n" for i in range(problems))
    )
    reward = folder / "even_length.py"
    reward.write_text("def even_length(completion, **_):\n    return float(len(completion) % 2 == 0)\n")
    return data, f"{reward}:even_length"


@pytest.fixture(scope="module")
def tiny_orm_dir(tmp_path_factory, tiny_tokenizer):
    return build_reward_model(tmp_path_factory.mktemp("tiny-orm"), tiny_tokenizer, seed=0)


@pytest.fixture(scope="module")
def data_and_reward(tmp_path_factory):
    return data_with_reward(tmp_path_factory.mktemp("select-data"), 5)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_select_curves_match_the_samples(tiny_model_dir, tiny_orm_dir, data_and_reward, tmp_path):
    data, reward = data_and_reward
    out = tmp_path / "eval"
    args = ["eval", str(tiny_model_dir), "--data", str(data), "--reward", reward]
    args += ["--n", "4", "--k", "1", "--k", "4"]
    selects = ["--select", "majority", "--select", f"best_of_n:{tiny_orm_dir}"]
    selects += ["--select", f"weighted_majority:{tiny_orm_dir}", "--n-curve", "1,2,4"]
    result = CliRunner().invoke(
        app, [*args, *selects, "--temperature", "1.0", "--max-new-tokens", "6", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    scaling = results["scaling"]
    assert [c["label"] for c in scaling["curves"]] == [
        "majority",
        f"best_of_n:{tiny_orm_dir}",
        f"weighted_majority:{tiny_orm_dir}",
    ]
    points = {c["method"]: {p["n"]: p for p in c["points"]} for c in scaling["curves"]}
    samples = [r for r in _jsonl(out / "samples.jsonl") if r["kind"] == "sample"]
    scores = [r[str(tiny_orm_dir)] for r in _jsonl(out / "orm_scores.jsonl")]
    assert len(samples) == len(scores) == 5 * 4
    by_problem = [
        [(s, sc) for s, sc in zip(samples, scores, strict=True) if s["problem"] == p] for p in range(5)
    ]

    # n = 1: best-of-1 is pass@1; a vote of one sample is right when it is right and has an answer
    assert points["best_of_n"][1]["accuracy"] == pytest.approx(results["pass@1"])
    voted = sum(s["correct"] and s["answer"] is not None for s in samples) / len(samples)
    assert (
        points["majority"][1]["accuracy"]
        == points["weighted_majority"][1]["accuracy"]
        == pytest.approx(voted)
    )
    # n = all samples: majority is maj@4; best-of-4 is the top-scored sample; weighted: summed sigmoids
    assert points["majority"][4]["accuracy"] == pytest.approx(results["maj@4"])
    best = [max(g, key=lambda x: x[1])[0]["correct"] for g in by_problem]
    assert points["best_of_n"][4]["accuracy"] == pytest.approx(sum(best) / 5)
    weighted = []
    for g in by_problem:
        votes: dict = {}
        for s, sc in g:
            if s["answer"] is not None:
                votes[s["answer"]] = votes.get(s["answer"], 0.0) + 1 / (1 + math.exp(-sc))
        right = {s["answer"] for s, _ in g if s["correct"]}
        weighted.append(bool(votes) and max(votes, key=votes.get) in right)
    assert points["weighted_majority"][4]["accuracy"] == pytest.approx(sum(weighted) / 5)

    # compute: tokens generated for all 4 samples = the samples' lengths; the ORM read every sample
    lengths = sum(s["length"] for s in samples)
    assert scaling["tokens_generated"] == lengths == points["best_of_n"][4]["tokens_generated"]
    assert points["majority"][4]["tokens_scored"] == 0
    assert points["best_of_n"][4]["tokens_scored"] == scaling["tokens_scored"][str(tiny_orm_dir)] > lengths
    md = (out / "results.md").read_text()
    assert "## Test-time scaling (5 problems, 4 samples each)" in md and "| majority | 4 |" in md
    assert "| majority | 2 |" in result.output
    assert (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "4", "--select", "majority", "--n-curve", "1,64"], r"\[64\] outside 1..4"),
        (["--n", "4", "--select", "best_of_n"], "needs a reward model"),
        (["--n", "4", "--select", "prm_min"], "needs a process reward model"),
        (["--n", "4", "--select", "prm_mean:x"], "unknown selection 'prm_mean'"),
        (["--select", "majority"], "needs several samples per problem"),
        (["--n", "4", "--n-curve", "1,2"], "--n-curve needs --select"),
        (["--n", "4", "--select", "weighted_majority:MODEL"], "is a causal LM"),
    ],
)
def test_eval_select_bad_input(tiny_model_dir, data_and_reward, tmp_path, extra, message):
    data, reward = data_and_reward
    extra = [e.replace("MODEL", str(tiny_model_dir)) for e in extra]
    args = [
        "eval",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--reward",
        reward,
        "--out",
        str(tmp_path / "x"),
    ]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "2", *extra])
    assert isinstance(result.exception, UserError), result.output
    assert re.search(message, str(result.exception)), str(result.exception)
    assert not (tmp_path / "x" / "samples.jsonl").exists()  # refused before generating
