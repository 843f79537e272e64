"""Every key a stage kind's schema accepts is read by that stage: a key that is validated and then ignored
(`train.grad_accum` in RL used to be) fails this test.

How: the SFT and RL stages run for a step or two on the tiny model while every attribute read of a config
section is recorded (a `__getattribute__` recorder on `Strict`, the base of every section), per section
instance of the run's own config tree (not other instances of the same class, such as the RolloutConfig the
eval builds for itself). The runs cover the branches: full fine-tuning and LoRA, eval on and off, epochs and
max_steps, dynamic sampling and a KL term. Then every leaf field of SFTConfig / RLConfig and their sections
must have been read, or be in ALLOWED with its reason. A reader that rejects a key (RLConfig's validators
refuse train.grad_accum != 1, for instance) counts: refusing is handling it. Writing the resolved config
(`model_dump`) reads nothing through attributes, so it does not count.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from typing import Any, Union

import pytest
from pydantic import BaseModel
from rl_testkit import rl_config, single_thread, write_inputs

from r1lab.config import RLConfig, SFTConfig, Strict, deep_merge, validate
from r1lab.stages.rl import run_rl
from r1lab.stages.sft import run_sft

# (section class, field) pairs a stage does not read itself, each with the reason it is still a real key.
ALLOWED = {
    ("SFTConfig", "kind"): "the stage discriminator: the pipeline reads it to pick the stage",
    ("RLConfig", "kind"): "the stage discriminator: the pipeline reads it to pick the stage",
    # the monitor of a learned reward needs a reward model: test_learned_reward.py checks these four keys
    **{
        ("RewardHackingConfig", k): "read in test_learned_reward.py"
        for k in ("verifier", "max_gap", "action", "patience")
    },
    # RIF-RFT's filter needs a reward some prompts always or never pass: test_rl_prompt_filter.py reads both keys
    **{("PassRateFilterConfig", k): "read in test_rl_prompt_filter.py" for k in ("k", "drop")},
}


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


class Reads:
    """Field names read per config instance (the instance is kept alive so its id is never reused)."""

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[BaseModel, set[str]]] = {}

    def of(self, obj: BaseModel) -> set[str]:
        return self.by_id.get(id(obj), (obj, set()))[1]


@pytest.fixture
def reads(monkeypatch) -> Iterator[Reads]:
    found = Reads()
    original = Strict.__getattribute__

    def recording(self: Any, name: str) -> Any:
        if name in type(self).model_fields:
            found.by_id.setdefault(id(self), (self, set()))[1].add(name)
        return original(self, name)

    monkeypatch.setattr(Strict, "__getattribute__", recording)
    yield found


def _sections(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (Union, types.UnionType, list, tuple, dict, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _sections(arg)]
    return []


def leaves(cls: type[BaseModel]) -> set[tuple[str, str]]:
    """(class, field) of every non-section field of `cls` and of its sections, recursively."""
    out: set[tuple[str, str]] = set()
    for name, field in cls.model_fields.items():
        subs = _sections(field.annotation)
        if not subs:
            out.add((cls.__name__, name))
        for sub in subs:
            out |= leaves(sub)
    return out


def read_leaves(cfg: BaseModel, found: Reads) -> set[tuple[str, str]]:
    """(class, field) read on the instances of `cfg`'s own tree."""
    out = {(type(cfg).__name__, name) for name in found.of(cfg)}
    for value in cfg.__dict__.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                out |= read_leaves(item, found)
    return out


def unread(kind: type[BaseModel], configs: list[BaseModel], found: Reads) -> list[str]:
    seen = set().union(*(read_leaves(cfg, found) for cfg in configs))
    return sorted(f"{c}.{f}" for c, f in leaves(kind) - seen - set(ALLOWED))


def _sft_data(tmp_path) -> str:
    path = tmp_path / "chats.jsonl"
    rows = [(f"What is {i} + {i}?", f"{i} + {i} = {2 * i}.") for i in range(10)]
    rows.append(("What is 1 + 1?", "2. " * 100))  # longer than max_length: exercises data.overlong
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            + "\n"
            for q, a in rows
        )
    )
    return str(path)


def test_every_sft_key_is_read(tmp_path, tiny_model_dir, reads):
    data = _sft_data(tmp_path)
    base = {"model": {"path": str(tiny_model_dir)}, "data": {"path": data, "max_length": 64}}
    variants = [
        {  # full fine-tuning, eval on, max_steps, warmup from warmup_ratio, checkpoints, HFT, Masked Thought, UDS
            "data": {"eval_fraction": 0.2, "overlong": "truncate"},
            "hft": {"others": "freeze"},
            "mask_thought": {"p_max": 0.3, "warmup_fraction": 0.5, "replace_with": "token", "token": "<pad>"},
            "uds": {"keep": 1, "alpha": 1e-3, "queue": 8, "sketch_dim": 16},
            "optim": {"warmup_ratio": 0.5},
            "train": {"output_dir": str(tmp_path / "a"), "max_steps": 2, "batch_size": 2, "eval_every": 1,
                      "save_every": 1, "save_total_limit": 1},
        },
        {  # LoRA (merged on save), packing, no eval, epochs instead of max_steps
            "model": {"lora": {"r": 2, "alpha": 4, "merge_on_save": True, "init": "pissa"}},
            "packing": True,
            "loss": "otr",
            "otr": {"k": 2, "temperature": 0.9, "negative_reward": -0.2, "nll_weight": 0.5},
            "train": {"output_dir": str(tmp_path / "b"), "epochs": 0.2, "batch_size": 2},
        },
    ]  # fmt: skip
    configs = [validate(SFTConfig, deep_merge(base, v)) for v in variants]
    for cfg in configs:
        run_sft(cfg)
    assert unread(SFTConfig, configs, reads) == []


# A reward that is slow once (so the runner waits on its timeout) and fails on some calls (so a
# failure_reward is given): the reward spec's keys are read on those paths only.
SLOW_AND_FLAKY = """
import time

SLEPT = []

def fn(completion, **columns):
    if not SLEPT:
        SLEPT.append(time.sleep(0.2))
    if len(completion) % 3 == 0:
        raise ValueError("flaky")
    return 1.0
"""


def test_every_rl_key_is_read(tmp_path, tiny_model_dir, reads):
    length = f"{write_inputs(tmp_path)[1]}:length"
    flaky = tmp_path / "flaky.py"
    flaky.write_text(SLOW_AND_FLAKY)
    variants = [
        {  # full fine-tuning with KL, eval every step, dynamic sampling, checkpoints, sampling knobs
            "rewards": [
                {"name": length},
                {"name": f"{flaky}:fn", "weight": 0.5, "timeout": 5.0, "failure_reward": -1.0, "kwargs": {}},
            ],
            "data": {"eval_fraction": 0.25, "overlong": "drop"},
            "algorithm": {"beta": 0.1, "dynamic_sampling": True, "max_refills": 1},
            "rollout": {"batch_size": 1, "top_k": 5, "stop": ["\n\n"]},
            "train": {"output_dir": str(tmp_path / "a"), "max_steps": 2, "eval_every": 1, "save_every": 1,
                      "save_total_limit": 1},
        },
        {  # LoRA (merged on save), no eval, epochs instead of max_steps; sapo with an entropy bonus, REINFORCE++
            "rewards": [{"name": length}],
            "model": {"lora": {"r": 2, "alpha": 4, "merge_on_save": True}},
            "algorithm": {"policy_loss": "sapo", "sapo_tau_pos": 0.9, "sapo_tau_neg": 1.2, "entropy_coef": 0.01,
                          "advantage": "reinforce_pp"},
            "train": {"output_dir": str(tmp_path / "b"), "max_steps": None, "epochs": 0.25},
        },
        {  # one step off-policy with masked IS on the stale samples (the HF engine refuses it without async)
            "rewards": [{"name": length}],
            "rollout": {"async": True},
            "algorithm": {"rollout_correction": {"mode": "mis", "level": "sequence", "threshold": 3.0,
                                                 "lower": 0.3}},
            "train": {"output_dir": str(tmp_path / "c"), "max_steps": 2},
        },
    ]  # fmt: skip
    configs = [rl_config(tmp_path, tiny_model_dir, v) for v in variants]
    for cfg in configs:
        run_rl(cfg)
    assert unread(RLConfig, configs, reads) == []


def test_the_check_catches_a_key_nobody_reads(tmp_path, reads):
    """The recorder itself: a key read nowhere is reported, a read one is not."""
    cfg = validate(RLConfig, {"data": {"path": "x.jsonl"}})
    assert cfg.data.path == "x.jsonl"
    missing = unread(RLConfig, [cfg], reads)
    assert "DataConfig.limit" in missing and "DataConfig.path" not in missing
