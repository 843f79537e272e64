"""Learned rewards in RL (`model:PATH`, r1lab.rewards.learned) and the reward-hacking monitor (stages/rl_hacking)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rl_testkit import read_metrics, rl_config, single_thread, write_inputs
from test_config_reads import read_leaves, reads  # noqa: F401  (reads: the attribute-read recorder fixture)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

from r1lab.config import RewardHackingConfig, RewardSpec, RLConfig, validate
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner
from r1lab.rewards.reward_model_io import load_reward_model, score
from r1lab.stages.rl import run_rl
from r1lab.stages.rl_hacking import HackingMonitor, pearson
from tiny import CORPUS, tiny_config

PROMPTS = ["What is 2 + 2?", "Name a colour.", "What is 2 + 2?"]
COMPLETIONS = ["4", "The sky is blue, so blue.", "It is 5 I think"]

# a verifier with `correctness` set (so, beside a learned reward, the monitor picks it without any config)
VERIFIER = """
def hit(completion, *, answer, **columns):
    return float(answer in completion)

hit.correctness = True
"""


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def build_orm(path: Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    """A tiny random outcome reward model: a one-label sequence classifier with r1lab's marker file."""
    torch.manual_seed(1)
    config = tiny_config(tokenizer)
    config.num_labels = 1
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    marker = {"kind": "orm", "base_model": "tiny", "system_prompt": None, "max_length": None}
    (path / "reward_model.json").write_text(json.dumps(marker))
    return path


@pytest.fixture(scope="module")
def orm_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return build_orm(tmp_path_factory.mktemp("orm") / "final", tiny_tokenizer)


def other_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with its own vocabulary and chat markers: nothing like the policy's BPE."""
    words = sorted(
        {w for line in CORPUS for w in line.split()} | {w for t in PROMPTS + COMPLETIONS for w in t.split()}
    )
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + ' [EOS] ' }}{% endfor %}"
    )
    fast.save_pretrained(path)
    return fast


def _direct(orm_dir: Path, prompts: list[str], completions: list[str]) -> list[float]:
    model, tokenizer, _ = load_reward_model(orm_dir)
    return torch.tensor(score(model, tokenizer, prompts, completions)).sigmoid().tolist()


def _columns(n: int) -> list[dict]:
    return [{"answer": "4"} for _ in range(n)]


def test_model_reward_is_the_reward_models_score(orm_dir):
    direct = _direct(orm_dir, PROMPTS, COMPLETIONS)
    with RewardRunner([RewardSpec(name=f"model:{orm_dir}", kwargs={"batch_size": 2})]) as runner:
        assert runner.worker is None  # scored in this process, no worker forked for it
        assert runner.labels == [f"model:{orm_dir.parent.name}"]
        got = runner.score(COMPLETIONS, PROMPTS, _columns(3))
    label = runner.labels[0]
    assert got.per_function[label] == pytest.approx(direct, abs=1e-6)
    assert len(set(direct)) == 3  # distinct texts get distinct scores: the check can fail
    assert all(0 < v < 1 for v in direct)
    raw = RewardRunner([RewardSpec(name=f"model:{orm_dir}", kwargs={"sigmoid": False})], isolated=False)
    logits = raw.score(COMPLETIONS, PROMPTS, _columns(3)).per_function[label]
    assert torch.tensor(logits).sigmoid().tolist() == pytest.approx(direct, abs=1e-6)


def test_a_reward_model_with_another_tokenizer_scores_the_text(tmp_path, tiny_model_dir, tiny_tokenizer):
    """The reward model re-tokenizes prompt and completion text with its own tokenizer."""
    orm = build_orm(tmp_path / "orm", other_tokenizer(tmp_path / "tok"))
    theirs = AutoTokenizer.from_pretrained(orm)
    assert theirs(COMPLETIONS[1])["input_ids"] != tiny_tokenizer(COMPLETIONS[1])["input_ids"]
    with RewardRunner([RewardSpec(name=f"model:{orm}")]) as runner:
        got = runner.score(COMPLETIONS, PROMPTS, _columns(3)).per_function["model:orm"]
    assert got == pytest.approx(_direct(orm, PROMPTS, COMPLETIONS), abs=1e-6)
    cfg = rl_config(
        tmp_path, tiny_model_dir, {"rewards": [{"name": f"model:{orm}"}], "train": {"max_steps": 1}}
    )
    run_rl(cfg)  # the policy's completions (its own token ids) are scored as text
    (row,) = read_metrics(tmp_path / "run")
    assert 0 < row["reward/model:orm/mean"] < 1


def test_mixing_by_weight_is_the_weighted_sum(tmp_path, orm_dir):
    file = tmp_path / "verifier.py"
    file.write_text(VERIFIER)
    specs = [RewardSpec(name=f"model:{orm_dir}", weight=0.5), RewardSpec(name=f"{file}:hit", weight=2.0)]
    with RewardRunner(specs) as runner:  # the verifier runs in the worker, the reward model here
        got = runner.score(COMPLETIONS, PROMPTS, _columns(3))
    learned = _direct(orm_dir, PROMPTS, COMPLETIONS)
    hits = [1.0, 0.0, 0.0]
    assert got.per_function["hit"] == hits
    mixed = [0.5 * a + 2.0 * b for a, b in zip(learned, hits, strict=True)]
    assert got.total.tolist() == pytest.approx(mixed, abs=1e-6)
    assert runner.accuracy_label == "hit"
    assert got.accuracy.tolist() == hits


def test_rl_with_a_learned_reward_logs_the_monitor(tmp_path, tiny_model_dir, orm_dir):
    """The learned reward is the only training reward; the verifier is scored with weight 0 for the monitor."""
    _, rewards = write_inputs(tmp_path)
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {"rewards": [{"name": f"model:{orm_dir}"}], "reward_hacking": {"verifier": f"{rewards}:length"}},
    )
    run_rl(cfg)
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    for row in rows:
        mine = [s for s in samples if s["step"] == row["step"]]
        label = next(k for k in mine[0]["rewards"] if k.startswith("model:"))
        learned = [s["rewards"][label] for s in mine]
        verifier = [s["rewards"]["length"] for s in mine]  # a dense verifier: the correlation is defined
        assert row["hacking/learned_mean"] == pytest.approx(sum(learned) / len(learned), abs=1e-6)
        assert row["hacking/verifier_mean"] == pytest.approx(sum(verifier) / len(verifier))
        assert row["hacking/gap"] == pytest.approx(row["hacking/learned_mean"] - row["hacking/verifier_mean"])
        # the training reward is the learned one alone (the verifier's weight is 0)
        assert row["reward/mean"] == pytest.approx(row["hacking/learned_mean"], abs=1e-6)
        assert row["hacking/corr"] == pytest.approx(pearson(learned, verifier))
        assert "hacking/steps_over" not in row  # no max_gap: only logged


def test_both_rewards_configured_are_monitored_without_config(tmp_path, tiny_model_dir, orm_dir):
    file = tmp_path / "verifier.py"
    file.write_text(VERIFIER)
    rewards = [{"name": f"model:{orm_dir}"}, {"name": f"{file}:hit", "kwargs": {}}]
    cfg = rl_config(tmp_path, tiny_model_dir, {"rewards": rewards, "train": {"max_steps": 1}})
    run_rl(cfg)
    (row,) = read_metrics(tmp_path / "run")
    assert row["hacking/verifier_mean"] == pytest.approx(row["reward/hit/mean"])


def _step(learned: list[float], verifier: list[float]) -> list:
    return [SimpleNamespace(per_function={"model:orm": learned, "hit": verifier})]


def test_monitor_acts_after_patience_steps_over_the_gap(tmp_path, capsys):
    config = RewardHackingConfig(verifier="hit", max_gap=0.5, action="stop", patience=2)
    monitor = HackingMonitor("model:orm", "hit", config)
    saved: list[int] = []
    # gaps: 0.4 (under), 0.6 (over, 1), 0.3 (under: the count restarts), 0.6, 0.7 -> stop at step 5
    steps = [([0.9, 0.9], [1.0, 0.0]), ([0.8, 0.8], [0.2, 0.2]), ([0.3, 0.5], [0.0, 0.2]), ([0.6, 0.6], [0, 0]),
             ([0.7, 0.9], [0.0, 0.2])]  # fmt: skip
    for step, (learned, verifier) in enumerate(steps, start=1):
        metrics = monitor.update(_step(learned, verifier))
        assert metrics["hacking/gap"] == pytest.approx(sum(learned) / 2 - sum(verifier) / 2)
        if step < 5:
            monitor.act(step, metrics, tmp_path, lambda: saved.append(-1), main=True)
    assert [monitor.steps_over, saved] == [2, []]
    with pytest.raises(UserError, match=r"steps 4-5") as stopped:
        monitor.act(5, metrics, tmp_path, lambda: saved.append(5), main=True)
    assert saved == [5] and "reward_hacking.action: stop" in str(stopped.value)
    assert metrics["hacking/corr"] == pytest.approx(1.0)  # learned and verifier move together at step 5

    warn = HackingMonitor("model:orm", "hit", RewardHackingConfig(verifier="hit", max_gap=0.5, patience=1))
    metrics = warn.update(_step([0.9, 0.9], [0.0, 0.0]))
    warn.act(1, metrics, tmp_path, lambda: saved.append(-1), main=True)
    assert saved == [5] and "reward hacking?" in capsys.readouterr().err  # the console is stderr


def test_rl_stop_writes_a_checkpoint_and_says_why(tmp_path, tiny_model_dir, orm_dir):
    _, rewards = write_inputs(tmp_path)
    hacking = {"verifier": "target", "max_gap": -2.0, "action": "stop", "patience": 2}  # every gap is over
    rewards_cfg = [{"name": f"model:{orm_dir}"}, {"name": f"{rewards}:target", "weight": 0.0}]
    overrides = {"rewards": rewards_cfg, "reward_hacking": hacking, "train": {"max_steps": 4}}
    cfg = rl_config(tmp_path, tiny_model_dir, overrides)
    with pytest.raises(UserError, match=r"for 2 steps in a row \(steps 1-2"):
        run_rl(cfg)
    run = tmp_path / "run"
    assert [r["hacking/steps_over"] for r in read_metrics(run)] == [1.0, 2.0]
    assert (run / "checkpoints" / "step-2").is_dir()
    assert json.loads((run / "state.json").read_text())["status"] == "interrupted"


def test_every_reward_hacking_key_is_read(tmp_path, tiny_model_dir, orm_dir, reads):  # noqa: F811
    _, rewards = write_inputs(tmp_path)
    hacking = {"verifier": "target", "max_gap": -2.0, "action": "warn", "patience": 2}  # warns at step 2
    cfg = rl_config(
        tmp_path,
        tiny_model_dir,
        {"rewards": [{"name": f"model:{orm_dir}"}, {"name": f"{rewards}:target"}], "reward_hacking": hacking},
    )
    run_rl(cfg)
    seen = read_leaves(cfg, reads)
    assert {f for c, f in seen if c == "RewardHackingConfig"} == set(RewardHackingConfig.model_fields)


def test_bad_inputs(tmp_path, tiny_model_dir, orm_dir):
    with pytest.raises(UserError, match="reward model folder not found"):
        RewardRunner([RewardSpec(name=f"model:{tmp_path / 'nothing'}")])
    with pytest.raises(UserError, match=r"is a causal LM \(LlamaForCausalLM\), not a reward model"):
        RewardRunner([RewardSpec(name=f"model:{tiny_model_dir}")])
    with pytest.raises(UserError, match="timeout is not applied to a learned reward"):
        RewardRunner([RewardSpec(name=f"model:{orm_dir}", timeout=5.0)])
    with pytest.raises(UserError, match="has no option 'temperature'"):
        RewardRunner([RewardSpec(name=f"model:{orm_dir}", kwargs={"temperature": 1.0})])
    with pytest.raises(UserError, match=r"kwargs\.batch_size is 0"):
        RewardRunner([RewardSpec(name=f"model:{orm_dir}", kwargs={"batch_size": 0})])
    with pytest.raises(UserError, match="needs a folder after 'model:'"):
        RewardRunner([RewardSpec(name="model:")])
    base = {"data": {"path": "x.jsonl"}}
    with pytest.raises(UserError, match="no reward is a learned one"):
        validate(RLConfig, {**base, "reward_hacking": {"verifier": "math"}})
    learned = [{"name": f"model:{orm_dir}"}]
    with pytest.raises(UserError, match="act on max_gap"):
        validate(RLConfig, {**base, "rewards": learned, "reward_hacking": {"verifier": "x", "patience": 2}})
    cfg = rl_config(tmp_path, tiny_model_dir, {"rewards": learned, "reward_hacking": {"verifier": "mathh"}})
    with pytest.raises(UserError, match=r"where: reward_hacking\.verifier"):
        run_rl(cfg)
    with pytest.raises(UserError, match="not a model:"):
        validate(RLConfig, {**base, "rewards": learned, "reward_hacking": {"verifier": f"model:{orm_dir}"}})
