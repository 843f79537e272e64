"""`r1lab data check TRAIN TEST` as typed: counts and examples printed, JSON report, exit 1 when contaminated."""

from __future__ import annotations

import json
import subprocess
import sys


def r1lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1lab.cli", *args], capture_output=True, text=True)


def test_data_check_prints_counts_examples_and_exits_by_threshold(tmp_path):
    r = r1lab(
        "data", "make", "addition", "--n", "20", "--split", "train", "--out", str(tmp_path / "train.jsonl")
    )
    assert r.returncode == 0, r.stderr
    r = r1lab(
        "data", "make", "addition", "--n", "10", "--split", "test", "--out", str(tmp_path / "test.jsonl")
    )
    assert r.returncode == 0, r.stderr
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    # the built-in splits never share a problem: clean
    clean = r1lab("data", "check", str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 of 10 test prompts (0.0%) are in the 20 training prompts: 0 exact" in clean.stdout
    # plant two training problems in the test set, one with its case and spacing changed
    planted = [*test[:8], train[3], {**train[5], "prompt": "  " + train[5]["prompt"].upper()}]
    (tmp_path / "leaky.jsonl").write_text("".join(json.dumps(r) + "\n" for r in planted))
    report = tmp_path / "out" / "check.json"
    args = [
        "data",
        "check",
        str(tmp_path / "train.jsonl"),
        str(tmp_path / "leaky.jsonl"),
        "--json",
        str(report),
    ]
    leaky = r1lab(*args)
    assert leaky.returncode == 1, leaky.stdout + leaky.stderr
    assert "2 of 10 test prompts (20.0%) are in the 20 training prompts: 2 exact" in leaky.stdout
    assert f"train #4 {train[3]['prompt']!r}" in leaky.stdout and "test #9" in leaky.stdout
    data = json.loads(report.read_text())
    assert data["contaminated"] == 2 and [(m["test"], m["train"]) for m in data["exact"]] == [(9, 4), (10, 6)]
    assert r1lab(*args, "--fail-above", "0.2").returncode == 0  # 20% is not above 20%


def test_data_check_on_a_missing_file_says_which_one(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "What is 1 + 1?"}) + "\n")
    r = r1lab("data", "check", str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"))
    assert r.returncode == 2
    assert "data file not found" in r.stderr and f"where: test data: {tmp_path / 'test.jsonl'}" in r.stderr
