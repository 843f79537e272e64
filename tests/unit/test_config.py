from __future__ import annotations

import pytest

from r1lab.config import (
    RLConfig,
    SFTConfig,
    apply_overrides,
    dump_config,
    load_config,
    load_yaml,
)
from r1lab.errors import UserError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "data: {path: a.jsonl}\noptim: {lr: 1.0e-4, scheduler: linear}\n")
    child = write(
        tmp_path / "child.yaml", "defaults: base.yaml\noptim: {lr: 3.0e-5}\ntrain: {max_steps: 5}\n"
    )
    cfg = load_config(SFTConfig, child, ["train.batch_size=2", "model.lora.r=4", "packing=true"])
    assert cfg.optim.lr == 3e-5  # child wins over parent
    assert cfg.optim.scheduler == "linear"  # inherited
    assert cfg.train.max_steps == 5 and cfg.train.batch_size == 2
    assert cfg.model.lora is not None and cfg.model.lora.r == 4
    assert cfg.packing is True


def test_unknown_key_names_key_file_line_and_closest(tmp_path):
    path = write(tmp_path / "c.yaml", "data: {path: a.jsonl}\noptim:\n  lr: 1.0e-5\n  warmup_stpes: 3\n")
    with pytest.raises(UserError) as e:
        load_config(SFTConfig, path)
    message = str(e.value)
    assert "optim.warmup_stpes" in message
    assert "did you mean 'warmup_steps'" in message
    assert str(path) in message
    assert "line 4" in message


def test_unknown_top_level_key_and_nested_list(tmp_path):
    path = write(tmp_path / "rl.yaml", "data: {path: p.jsonl}\nrewards:\n  - {name: math, wieght: 2}\n")
    with pytest.raises(UserError, match="did you mean 'weight'"):
        load_config(RLConfig, path)
    with pytest.raises(UserError, match="did you mean 'rollout'"):
        load_config(RLConfig, path, ["rollot.n=4"])


def test_invalid_values_are_reported(tmp_path):
    path = write(tmp_path / "rl.yaml", "data: {path: p.jsonl}\nrollout: {n: 1}\n")
    with pytest.raises(UserError, match=r"rollout\.n"):
        load_config(RLConfig, path)


def test_cycle_missing_file_and_bad_yaml(tmp_path):
    write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_yaml(tmp_path / "a.yaml")
    with pytest.raises(UserError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    write(tmp_path / "bad.yaml", "data:\n  path: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_yaml(tmp_path / "bad.yaml")


def test_override_syntax_errors():
    with pytest.raises(UserError, match="key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(UserError, match="not a section"):
        apply_overrides({"optim": {"lr": 1}}, ["optim.lr.x=2"])


@pytest.mark.parametrize("kind", [SFTConfig, RLConfig])
def test_resolved_config_roundtrips(tmp_path, kind):
    cfg = kind(data={"path": "x.jsonl"})
    dump_config(cfg, tmp_path / "config.yaml")
    again = load_config(kind, tmp_path / "config.yaml")
    assert again == cfg


def test_a_partial_section_keeps_the_stage_kinds_defaults(tmp_path):
    """RL's optim defaults are lr 1e-6 on a constant schedule: setting only the lr must not switch the schedule
    to OptimConfig's generic cosine; the same for train (each stage kind's own output_dir)."""
    path = write(tmp_path / "rl.yaml", "data: {path: a.jsonl}\noptim: {lr: 1.0e-5}\ntrain: {max_steps: 5}\n")
    rl = load_config(RLConfig, path)
    assert (rl.optim.lr, rl.optim.scheduler) == (1e-5, "constant")
    assert (rl.train.max_steps, rl.train.output_dir) == (5, "runs/rl")
    assert load_config(RLConfig, path, ["optim.scheduler=cosine"]).optim.scheduler == "cosine"
    sft = load_config(SFTConfig, path, ["train.seed=3"])
    assert (sft.optim.scheduler, sft.train.output_dir, sft.train.seed) == ("cosine", "runs/sft", 3)
    # with no section at all the stage default is used as before
    bare = load_config(RLConfig, write(tmp_path / "bare.yaml", "data: {path: a.jsonl}\n"))
    assert (bare.optim.lr, bare.optim.scheduler, bare.train.output_dir) == (1e-6, "constant", "runs/rl")
