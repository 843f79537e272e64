"""Reward failures in an RL run on the tiny model: printed once, written with their inputs to
reward_errors.jsonl, counted in metrics.jsonl, and a reward that fails on every call stops the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rl_testkit import read_metrics, rl_config, single_thread

from r1lab.errors import UserError
from r1lab.rewards.worker import TIMEOUTS_IN_A_ROW
from r1lab.stages.rl import run_rl

FAILING = """
import time

def boom(completion, *, prompt, answer, **_):
    raise ZeroDivisionError(f"cannot score {prompt[-8:]!r}")

def odd(completion, **_):
    if len(completion) % 2:
        raise ValueError(f"odd length {len(completion)}")
    return len(completion) / 40

def hang(completion, **_):
    time.sleep(60)
"""

STEP_ROWS = 2 * 4  # prompts_per_step x rollout.n in rl_testkit's config


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def _config(tmp_path: Path, model_dir: Path, rewards: list[dict], **overrides):
    (tmp_path / "failing.py").write_text(FAILING)
    specs = [{**r, "name": f"{tmp_path / 'failing.py'}:{r['name']}"} for r in rewards]
    return rl_config(tmp_path, model_dir, {"rewards": specs, **overrides})


def _errors(run: Path) -> list[dict]:
    """The failures of the training steps (the first record is the check before the first rollout, which
    scores an empty completion once)."""
    records = [json.loads(line) for line in (run / "reward_errors.jsonl").read_text().splitlines()]
    assert all(r["completion"] == "" for r in records if r["batch"] == 1)
    return [r for r in records if r["batch"] > 1]


def test_a_reward_that_always_raises_stops_the_run(tmp_path, tiny_model_dir, capsys):
    cfg = _config(
        tmp_path, tiny_model_dir, [{"name": "boom"}], max_reward_failure_steps=2, train={"max_steps": 6}
    )
    with pytest.raises(UserError) as info:
        run_rl(cfg)
    text = info.value.render()
    assert "reward 'boom' failed on every call for 2 steps in a row (steps 1-2)" in text
    assert "ZeroDivisionError: cannot score" in text and "reward_errors.jsonl" in text
    assert "max_reward_failure_steps" in text
    run = Path(cfg.train.output_dir)
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2]  # stopped after step 2, not at max_steps
    assert all(m["reward/boom/failures"] == STEP_ROWS for m in metrics)
    errors = _errors(run)
    assert len(errors) == 2 * STEP_ROWS and {e["reward"] for e in errors} == {"boom"}
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    step1 = [s for s in samples if s["step"] == 1]
    assert sorted(e["completion"] for e in errors[:STEP_ROWS]) == sorted(s["completion"] for s in step1)
    assert all(e["columns"]["answer"] == "7" and e["prompt"].startswith("Write about") for e in errors)
    printed = " ".join(capsys.readouterr().err.split())
    assert printed.count("reward 'boom' failed:") == 1 and "ZeroDivisionError: cannot score" in printed
    assert f"'boom' {1 + 2 * STEP_ROWS} failed calls" in printed
    assert json.loads((run / "state.json").read_text())["status"] == "interrupted"


def test_a_reward_that_fails_on_some_calls_only_is_counted_and_training_goes_on(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, [{"name": "odd"}], max_reward_failure_steps=1)
    run_rl(cfg)
    run = Path(cfg.train.output_dir)
    metrics = read_metrics(run)
    errors = _errors(run)
    assert len(metrics) == 2 and sum(m["reward/odd/failures"] for m in metrics) == len(errors) > 0
    assert all(m["reward/odd/failures"] < STEP_ROWS for m in metrics)  # never every call: no stop
    assert all(e["error"] == f"ValueError: odd length {len(e['completion'])}" for e in errors)
    assert all(len(e["completion"]) % 2 for e in errors)


def test_a_reward_that_always_hangs_costs_a_few_timeouts_per_step_then_stops(tmp_path, tiny_model_dir):
    rewards = [{"name": "hang", "timeout": 0.5}]
    cfg = _config(tmp_path, tiny_model_dir, rewards, max_reward_failure_steps=2, train={"max_steps": 6})
    with pytest.raises(UserError, match="'hang' failed on every call for 2 steps"):
        run_rl(cfg)
    # the cost is counted, not timed: 3 calls a step wait out the timeout, the others are not run
    messages = [e["error"] for e in _errors(Path(cfg.train.output_dir))]
    timed_out = [m for m in messages if m.startswith("TimeoutError: no result after 0.5s")]
    assert len(timed_out) == 2 * TIMEOUTS_IN_A_ROW and len(messages) == 2 * STEP_ROWS
    assert sum("not run: 3 calls of this function in a row timed out" in m for m in messages) == 2 * (
        STEP_ROWS - TIMEOUTS_IN_A_ROW
    )


def test_each_rank_writes_its_own_errors_file(tmp_path, tiny_model_dir, monkeypatch):
    from r1lab.stages.rl_log import reward_errors_path

    cfg = _config(tmp_path, tiny_model_dir, [{"name": "boom"}])
    assert reward_errors_path(cfg) == Path(cfg.train.output_dir) / "reward_errors.jsonl"
    monkeypatch.setenv("RANK", "1")  # set by torchrun / accelerate launch
    assert reward_errors_path(cfg) == Path(cfg.train.output_dir) / "reward_errors.rank1.jsonl"
