"""`r1lab eval --search beam --prm PRM` and `--select prm_min:PRM / prm_last:PRM` end to end: a tiny random policy
and a tiny random PRM folder (step separator "."), the results checked against the PRM's own step scores of
the completions the eval wrote."""

from __future__ import annotations

import json
import re

import pytest
from test_eval_select_cli import _jsonl, data_with_reward
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.errors import UserError
from tiny import build_reward_model


@pytest.fixture(scope="module")
def tiny_prm_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny random PRM folder (kind prm, its steps ending at ".")."""
    return build_reward_model(
        tmp_path_factory.mktemp("tiny-prm"), tiny_tokenizer, seed=1, kind="prm", step_sep="."
    )


@pytest.fixture(scope="module")
def data_and_reward(tmp_path_factory):
    return data_with_reward(tmp_path_factory.mktemp("beam-data"), 3)


def test_beam_search_and_prm_selection_end_to_end(tiny_model_dir, tiny_prm_dir, data_and_reward, tmp_path):
    from r1lab.eval.scaling import prm_step_scores
    from r1lab.eval.select import prm_aggregate
    from r1lab.rewards.reward_model_io import load_reward_model

    data, reward = data_and_reward
    out = tmp_path / "eval"
    args = ["eval", str(tiny_model_dir), "--data", str(data), "--reward", reward, "--n", "3", "--temperature", "1.0",
            "--max-new-tokens", "24", "--out", str(out), "--select", f"prm_min:{tiny_prm_dir}",
            "--select", f"prm_last:{tiny_prm_dir}", "--n-curve", "1,3", "--search", "beam", "--prm",
            str(tiny_prm_dir), "--beam-width", "2", "--steps-per-expand", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    scorer = load_reward_model(tiny_prm_dir, kinds=("prm",))

    # --select prm_*: at n = all 3 samples, the sample with the best min / last step score of the PRM
    samples = [r for r in _jsonl(out / "samples.jsonl") if r["kind"] == "sample"]
    scored = [prm_step_scores(scorer, [(s["prompt"], s["completion"])])[0] for s in samples]  # one at a time
    written = [r[str(tiny_prm_dir)] for r in _jsonl(out / "orm_scores.jsonl")]  # batched in the eval
    assert len(written) == 9 and all(
        w == pytest.approx(s, abs=1e-5) for w, (s, _) in zip(written, scored, strict=True)
    )
    points = {c["method"]: {p["n"]: p for p in c["points"]} for c in results["scaling"]["curves"]}
    for method in ("prm_min", "prm_last"):
        picked = [
            max((prm_aggregate(scored[i][0], method), -i, samples[i]["correct"]) for i in range(3 * p, 3 * p + 3))
            for p in range(3)
        ]  # fmt: skip
        assert points[method][3]["accuracy"] == pytest.approx(sum(ok for *_, ok in picked) / 3)
        assert points[method][3]["tokens_scored"] == sum(t for _, t in scored)

    # --search beam: one row per problem, its score the PRM's last-step score of its text, its correctness the
    # reward's; the widths and budgets kept; the compute at least what the final beams hold
    beam = results["beam_search"]
    rows = _jsonl(out / "beam_samples.jsonl")
    assert [r["problem"] for r in rows] == [0, 1, 2] and beam["width"] == 2 and beam["steps_per_expand"] == 2
    for r in rows:
        ((steps, _),) = prm_step_scores(scorer, [(r["prompt"], r["completion"])])
        assert r["prm_score"] == pytest.approx(steps[-1], abs=1e-5)
        assert r["correct"] is (len(r["completion"]) % 2 == 0) and r["tokens"] <= 24
        assert r["live"][0] == 1 and all(1 <= w <= 2 for w in r["live"]) and r["rounds"] == len(r["live"])
    assert beam["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 3)
    assert beam["tokens_generated"] >= sum(r["tokens"] for r in rows)
    assert beam["tokens_generated"] <= beam["candidates_scored"] * 24
    assert beam["candidates_scored"] == sum(4 + 2 * sum(r["live"][1:]) for r in rows)
    assert beam["tokens_scored"] > beam["tokens_generated"]  # the PRM reads the prompt too
    md = (out / "results.md").read_text()
    assert "## Test-time scaling" in md and "## PRM-guided beam search (3 problems, width 2" in md


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--search", "beam"], "beam search is --search beam"),
        (["--search", "best", "--prm", "PRM"], "beam search is --search beam"),
        (["--beam-width", "2"], "--beam-width set without --search"),
        (["--search", "beam", "--prm", "PRM", "--beam-width", "0"], "--beam-width must be at least 1"),
        (["--search", "beam", "--prm", "POLICY"], "is a causal LM"),
        (["--search", "beam", "--prm", "PRM", "--beam-score", "mean"], "--beam-score 'mean'"),
        (["--n", "2", "--select", "best_of_n:PRM"], "is a process reward model"),
    ],
)
def test_beam_search_bad_input(tiny_model_dir, tiny_prm_dir, data_and_reward, tmp_path, extra, message):
    data, reward = data_and_reward
    extra = [e.replace("PRM", str(tiny_prm_dir)).replace("POLICY", str(tiny_model_dir)) for e in extra]
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
