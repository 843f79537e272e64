"""The experiment report's contamination table: every arm's training data against its eval set, from the run
folder (stage config.yaml, evaluation results.json), each file pair checked once."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from r1lab.experiments.overlap import contamination_table
from r1lab.experiments.report import write_experiment_report


def jsonl(path: Path, prompts: list[str]) -> str:
    path.write_text("".join(json.dumps({"prompt": p, "answer": "1"}) + "\n" for p in prompts))
    return str(path)


def stage(folder: Path, data: str) -> str:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        yaml.safe_dump({"kind": "sft", "data": {"path": data, "columns": {}}})
    )
    (folder / "stage.json").write_text(json.dumps({"status": "complete", "seconds": 1.0}))
    (folder / "metrics.jsonl").write_text("")
    return str(folder)


def evaluation(folder: Path, source: str, correct: list[int]) -> str:
    folder.mkdir(parents=True)
    rows = [
        {"problem": i, "kind": "greedy", "prompt": "q", "completion": "a", "correct": bool(c)}
        for i, c in enumerate(correct)
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = sum(correct) / len(correct)
    (folder / "results.json").write_text(
        json.dumps({"accuracy": acc, "accuracy_ci95": [0, 1], "num_problems": 4, "source": source})
    )
    return str(folder)


def test_each_arm_stage_gets_its_counts_and_the_report_shows_them(tmp_path):
    questions = [f"How many legs do {n} spiders and {n + 1} ants have in total?" for n in range(6)]
    train = jsonl(tmp_path / "train.jsonl", questions[:4])
    clean = jsonl(tmp_path / "clean.jsonl", questions[4:])
    test = jsonl(tmp_path / "test.jsonl", [questions[1].upper(), *questions[4:], "Name a prime above 7."])
    sft = stage(tmp_path / "stages" / "sft-aa", train)
    rl = stage(tmp_path / "stages" / "rl-bb", clean)
    arms = [
        {"label": "base", "stages": [], "sweep": None, "runs": [{"seed": None, "chain": [], "eval_dir": evaluation(tmp_path / "e" / "base", test, [0, 0, 0, 1])}]},
        {"label": "SFT-only", "stages": ["sft"], "sweep": None, "runs": [
            {"seed": s, "chain": [sft], "eval_dir": evaluation(tmp_path / "e" / f"sft{s}", test, [1, 0, 0, 1])} for s in (0, 1)]},
        {"label": "SFT→RL", "stages": ["sft", "rl"], "sweep": None, "runs": [{"seed": 0, "chain": [sft, rl], "eval_dir": evaluation(tmp_path / "e" / "rl", test, [1, 1, 0, 1])}]},
        {"label": "task-eval", "stages": ["sft"], "sweep": None, "runs": [{"seed": 0, "chain": [sft], "eval_dir": evaluation(tmp_path / "e" / "t", "task countdown (test)", [1, 1, 1, 1])}]},
    ]  # fmt: skip
    exp = {"name": "toy", "baseline": "SFT-only", "seeds": [0, 1], "arms": arms}
    table = contamination_table(exp)
    assert table is not None
    lines = table.splitlines()[2:]
    # SFT-only's two seeds share the data: one row; the base arm trains nothing; a task eval has no file
    assert lines == [
        f"| SFT-only | sft | {train} | {test} | 1 | 0 | 1 of 4 (25.0%) |",
        f"| SFT→RL | sft | {train} | {test} | 1 | 0 | 1 of 4 (25.0%) |",
        f"| SFT→RL | rl | {clean} | {test} | 2 | 0 | 2 of 4 (50.0%) |",
    ]
    (tmp_path / "pipeline.json").write_text(json.dumps({"experiment": exp}))
    md = write_experiment_report(tmp_path).read_text()
    assert "## Training data vs eval set (`r1lab data check`)" in md and lines[2] in md


def test_a_missing_training_file_is_a_row_that_says_so(tmp_path):
    test = jsonl(tmp_path / "test.jsonl", ["What is 1 + 1?"])
    sft = stage(tmp_path / "stages" / "sft-aa", str(tmp_path / "gone.jsonl"))
    run = {"seed": 0, "chain": [sft], "eval_dir": evaluation(tmp_path / "e", test, [1])}
    exp = {"arms": [{"label": "SFT", "stages": ["sft"], "runs": [run]}]}
    row = contamination_table(exp).splitlines()[2]
    assert row.endswith(f"| – | – | not checked: data file not found: {tmp_path / 'gone.jsonl'} |")
    assert (
        contamination_table({"arms": [{"label": "base", "stages": [], "runs": [{**run, "chain": []}]}]})
        is None
    )
