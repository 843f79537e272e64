"""The experiment report from a run folder whose evaluations are known: the numbers in results.md must be the
hand-computed ones (accuracy, paired Δ, discordant counts, exact McNemar p), and the page must render offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1lab.errors import UserError
from r1lab.experiments.report import write_experiment_report


def write_eval(folder: Path, correct: list[int]) -> str:
    folder.mkdir(parents=True)
    rows = [
        {"problem": i, "kind": "greedy", "prompt": f"q{i}", "completion": f"a{i}", "correct": bool(c)}
        for i, c in enumerate(correct)
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = sum(correct) / len(correct)
    (folder / "results.json").write_text(
        json.dumps({"accuracy": acc, "accuracy_ci95": [0, 1], "num_problems": 20})
    )
    return str(folder)


def write_stage(folder: Path, seconds: float, metrics: list[dict]) -> str:
    folder.mkdir(parents=True)
    (folder / "stage.json").write_text(json.dumps({"status": "complete", "seconds": seconds}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return str(folder)


def test_report_numbers_are_the_hand_computed_ones(tmp_path):
    base = [0] * 20
    sft = [1] * 4 + [0] * 16  # 20%
    rl = [1] * 4 + [1] * 5 + [0] * 11  # 45%: solves 5 more than SFT, loses none
    sft_dir = write_stage(tmp_path / "stages" / "sft-1", 100, [{"step": 1, "loss": 2.0, "tokens": 3000}])
    rl_dir = write_stage(
        tmp_path / "stages" / "rl-1",
        200,
        [
            {
                "step": 1,
                "reward/mean": 0.1,
                "tokens_trained": 500,
                "tokens_per_s": 10.0,
                "time/generation": 40.0,
            }
        ],
    )
    arms = [
        {"label": "base", "stages": [], "sweep": None, "runs": [{"seed": None, "chain": [], "eval_dir": write_eval(tmp_path / "e" / "base", base)}]},
        {"label": "SFT-only", "stages": ["sft"], "sweep": None, "runs": [{"seed": None, "chain": [sft_dir], "eval_dir": write_eval(tmp_path / "e" / "sft", sft)}]},
        {"label": "SFT→RL", "stages": ["sft", "rl"], "sweep": None, "runs": [{"seed": None, "chain": [sft_dir, rl_dir], "eval_dir": write_eval(tmp_path / "e" / "rl", rl)}]},
    ]  # fmt: skip
    state = {"experiment": {"name": "toy", "baseline": "SFT-only", "seeds": [None], "arms": arms}}
    (tmp_path / "pipeline.json").write_text(json.dumps(state))

    table = write_experiment_report(tmp_path).read_text()
    arms_table = table.split("\n\n")[2]  # title, summary line, then the arms table
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in arms_table.splitlines()}
    # accuracy, Δ vs SFT-only in points, p = exact McNemar: 2 * P[Bin(5, 1/2) <= 0] = 1/16; base: 0 vs 4 -> 1/8
    assert rows["SFT→RL"][3] == "45.0" and rows["SFT→RL"][6] == "+25.0"
    assert rows["SFT→RL"][8] == "0.062" and rows["base"][8] == "0.12"
    assert rows["SFT→RL"][9] == "0.12"  # Holm over 2 arms: 2 * 0.0625 = 0.125, then max(0.125, 0.125)
    assert rows["SFT→RL"][10:13] == [
        "5m00s",
        "3.5k",
        "400 |",
    ]  # 100 + 200 s; 3000 + 500 tokens; 10 tok/s * 40 s
    assert rows["SFT-only"][6] == "(baseline)"
    assert "Compute: 5m00s training (each shared stage once)" in table  # sft 100 s counted once, + rl 200 s
    assert "| SFT→RL | 5 | 0 | 4, 5, 6, 7, 8 |" in table  # where they differ: problems 4-8
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page
    assert "q4" in page and "a4" in page  # a problem SFT→RL solves and SFT-only does not, side by side


def test_report_against_another_arm_goes_to_its_own_folder(tmp_path):
    def arm(label, correct):
        run = {"seed": None, "chain": [], "eval_dir": write_eval(tmp_path / "e" / label, correct)}
        return {"label": label, "stages": [], "sweep": None, "runs": [run]}

    arms = [arm("A", [0] * 10), arm("SFT", [1] * 6 + [0] * 4), arm("RL", [1] * 3 + [0] * 7)]
    state = {"experiment": {"name": "toy", "baseline": "A", "seeds": [None], "arms": arms}}
    (tmp_path / "pipeline.json").write_text(json.dumps(state))
    own = write_experiment_report(tmp_path).read_text()
    against_sft = write_experiment_report(tmp_path, baseline="SFT", out=tmp_path / "vs-sft")
    table = against_sft.read_text()
    assert (
        against_sft == tmp_path / "vs-sft" / "results.md" and (tmp_path / "vs-sft" / "report.html").is_file()
    )
    assert "| RL | (base model) | – | 30.0 | [0.0, 60.0] | – | -30.0 |" in table  # 3 of 10 vs SFT's 6 of 10
    assert "| SFT | (base model) | – | 60.0 | [30.0, 90.0] | – | (baseline) |" in table
    assert (tmp_path / "results.md").read_text() == own and "-30.0" not in own  # the run's own report stays
    with pytest.raises(UserError, match="no arm 'DPO' to compare with") as e:
        write_experiment_report(tmp_path, baseline="DPO", out=tmp_path / "x")
    assert "A, SFT, RL" in e.value.fix


def test_report_of_a_folder_without_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="holds no experiment"):
        write_experiment_report(tmp_path)


def test_report_of_an_interrupted_experiment_pairs_the_seeds_it_has(tmp_path):
    def run(seed, name, correct, evaluated=True):
        folder = tmp_path / "e" / f"{name}{seed}"
        eval_dir = write_eval(folder, correct) if evaluated else str(folder)
        return {"seed": seed, "chain": [], "eval_dir": eval_dir}

    sft = [run(0, "sft", [1, 0, 0, 0]), run(1, "sft", [1, 1, 0, 0])]
    rl = [
        run(0, "rl", [1, 1, 1, 0]),
        run(1, "rl", [1, 1, 1, 1], evaluated=False),
    ]  # killed before seed 1's eval
    arms = [
        {"label": "SFT-only", "stages": ["sft"], "sweep": None, "runs": sft},
        {"label": "SFT→RL", "stages": ["sft", "rl"], "sweep": None, "runs": rl},
    ]
    state = {"experiment": {"name": "toy", "baseline": "SFT-only", "seeds": [0, 1], "arms": arms}}
    (tmp_path / "pipeline.json").write_text(json.dumps(state))
    table = write_experiment_report(tmp_path).read_text()
    assert "| SFT→RL | sft → rl | 1 | 75.0 |" in table  # one seed so far
    assert "| SFT→RL | 0 | 75.0 | [0.0, 100.0] | +50.0 | 2 / 0 | 0.5 |" in table  # paired with seed 0 only
