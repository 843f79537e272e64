"""RIF-RFT's pass_rate_filter before RL and Metis-RISE's per-prompt accuracy (prompt_stats.jsonl), on the tiny
model with a scripted reward whose pass rates are known: prompt i is solved by every completion when i % 3 == 0
and by none otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rl_testkit import rl_config, single_thread

from r1lab.config import RLConfig, validate
from r1lab.errors import UserError
from r1lab.eval.pass_rate import kept_by_pass_rate, pass_rate_counts, pass_rates
from r1lab.stages.rl import run_rl
from r1lab.stages.rl_prompt_stats import read_prompt_stats

SCRIPTED = """
def by_index(completion, *, prompt, **columns):
    return 1.0 if int(prompt.rstrip(".").split()[-1]) % 3 == 0 else 0.0
"""
N_PROMPTS = 8  # solved: 0, 3, 6


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def scripted_config(tmp_path: Path, model_dir: Path, **overrides) -> RLConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "tasks.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Write about item {i}.", "answer": "7", "completion": f"done {i}"}) + "\n"
            for i in range(N_PROMPTS)
        )
    )
    reward = tmp_path / "scripted.py"
    reward.write_text(SCRIPTED)
    base = {"data": {"path": str(data), "format": "auto"}, "rewards": [{"name": f"{reward}:by_index"}]}
    return rl_config(tmp_path, model_dir, {**base, **overrides})


def test_pass_rates_and_drop_rules_on_hand_rows():
    rows = [{"problem": 0, "kind": "greedy", "correct": True}]
    solved = [[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    rows += [{"problem": i, "kind": "sample", "correct": bool(c)} for i, s in enumerate(solved) for c in s]
    rates, greedy = pass_rates(rows, 3)
    assert rates == [0.0, 1.0, 0.25] and greedy == [True, None, None]
    assert kept_by_pass_rate(rates, "never") == [1, 2]
    assert kept_by_pass_rate(rates, "always") == [0, 2]
    assert kept_by_pass_rate(rates, "both") == [2]
    assert pass_rate_counts(rates) == {"prompts": 3, "never": 1, "mixed": 1, "always": 1}


def test_filter_drops_never_solved_prompts_and_writes_rates(tmp_path, tiny_model_dir):
    cfg = scripted_config(tmp_path, tiny_model_dir, pass_rate_filter={"k": 3, "drop": "never"})
    run_rl(cfg)
    out = Path(cfg.train.output_dir)
    rates = read(out / "pass_rates.jsonl")
    assert [r["pass_rate"] for r in rates] == [1.0 if i % 3 == 0 else 0.0 for i in range(N_PROMPTS)]
    assert [r["kept"] for r in rates] == [i % 3 == 0 for i in range(N_PROMPTS)]
    summary = json.loads((out / "pass_rate_filter.json").read_text())
    assert summary == {"k": 3, "drop": "never", "prompts": 8, "never": 5, "mixed": 0, "always": 3,
                       "kept": 3, "dropped": 5}  # fmt: skip
    trained = {row["text"] for row in read(out / "prompt_stats.jsonl")}  # RL saw only the kept prompts
    assert trained <= {f"Write about item {i}." for i in (0, 3, 6)}


def test_filter_drop_always_keeps_the_unsolved_and_dropping_all_is_refused(tmp_path, tiny_model_dir):
    cfg = scripted_config(tmp_path / "a", tiny_model_dir, pass_rate_filter={"k": 2, "drop": "always"})
    cfg.train.max_steps = 1
    run_rl(cfg)
    summary = json.loads((Path(cfg.train.output_dir) / "pass_rate_filter.json").read_text())
    assert (summary["kept"], summary["dropped"]) == (5, 3)
    cfg = scripted_config(tmp_path / "b", tiny_model_dir, pass_rate_filter={"k": 2, "drop": "both"})
    with pytest.raises(UserError, match="dropped every one of the 8 training prompts: 5 never solved and 3"):
        run_rl(cfg)


def test_prompt_stats_count_every_rollout_and_survive_a_resume(tmp_path, tiny_model_dir):
    cfg = scripted_config(tmp_path, tiny_model_dir)  # 2 prompts a step, 4 rollouts each
    cfg.train.save_every = 1
    run_rl(cfg)
    out = Path(cfg.train.output_dir)
    lines = read(out / "prompt_stats.jsonl")
    assert [r["step"] for r in lines] == [1, 1, 2, 2] and all(r["n"] == 4 for r in lines)
    for r in lines:
        index = int(r["text"].rstrip(".").split()[-1])
        assert r["correct"] == (4 if index % 3 == 0 else 0)
    totals = read_prompt_stats(out / "prompt_stats.jsonl")
    assert sum(t.n for t in totals.values()) == 16
    for t in totals.values():
        index = int(t.text.rstrip(".").split()[-1])
        assert t.solution == f"done {index}"  # the data's written solution, recorded on first sight
        assert (t.completion is not None) == (index % 3 == 0) and t.accuracy == (index % 3 == 0)
    # a step 3 that ran after the step-2 checkpoint and was lost: the resumed run drops its line and adds its
    # own; the lines up to the checkpoint stay as they were (a marked one shows they were not rewritten)
    lost = {"step": 3, "prompt": 0, "text": "lost", "n": 99, "correct": 99}
    kept = [{**lines[0], "marker": 1}, *lines[1:], lost]
    (out / "prompt_stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    train = {**cfg.train.model_dump(), "max_steps": 3, "resume": True}
    run_rl(validate(RLConfig, {**cfg.model_dump(mode="json"), "train": train}))
    lines = read(out / "prompt_stats.jsonl")
    assert [r["step"] for r in lines] == [1, 1, 2, 2, 3, 3] and all(r["n"] == 4 for r in lines)
    assert lines[0]["marker"] == 1 and "lost" not in {r["text"] for r in lines}


def test_filter_config_is_validated():
    base = {"data": {"path": "p.jsonl"}}
    with pytest.raises(UserError, match=r"pass_rate_filter\.drop"):
        validate(RLConfig, {**base, "pass_rate_filter": {"drop": "sometimes"}})
    with pytest.raises(UserError, match=r"pass_rate_filter\.k"):
        validate(RLConfig, {**base, "pass_rate_filter": {"k": 1}})
    with pytest.raises(UserError, match=r"rollout\.tools"):
        validate(RLConfig, {**base, "pass_rate_filter": {}, "rollout": {"tools": ["calculator"]}})


def test_a_resumed_run_reads_its_pass_rates_back(tmp_path, tiny_model_dir):
    cfg = scripted_config(tmp_path, tiny_model_dir, pass_rate_filter={"k": 2})
    cfg.train.save_every = 1
    run_rl(cfg)
    out = Path(cfg.train.output_dir)
    rows = read(out / "pass_rates.jsonl")
    rows[0]["pass_rate"] = 0.5  # not what sampling again gives: the resumed run must take it from the file
    (out / "pass_rates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = {**cfg.train.model_dump(), "max_steps": 3, "resume": True}
    run_rl(validate(RLConfig, {**cfg.model_dump(mode="json"), "train": train}))
    summary = json.loads((out / "pass_rate_filter.json").read_text())
    assert (summary["mixed"], summary["always"], summary["kept"]) == (1, 2, 3)
