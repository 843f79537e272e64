"""How a stage starts: the data is read and checked before any model loads, a failed start leaves no run folder
behind, and the saved weights get the same file mode as every other file (the umask's)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from rl_testkit import rl_config

from r1lab.config import SFTConfig, validate
from r1lab.errors import UserError
from r1lab.models import load_model, save_model
from r1lab.stages.rl import run_rl
from r1lab.stages.sft import run_sft


def sft_config(tmp_path: Path, model: Path, data: Path) -> SFTConfig:
    return validate(
        SFTConfig,
        {
            "model": {"path": str(model)},
            "data": {"path": str(data), "max_length": 32},
            "train": {"output_dir": str(tmp_path / "runs" / "x" / "sft"), "batch_size": 2, "max_steps": 1},
        },
    )


def good_rows(n: int = 4) -> str:
    return "".join(json.dumps({"prompt": f"{a} + 1 =", "completion": f" {a + 1}"}) + "\n" for a in range(n))


@pytest.fixture
def no_model(tmp_path) -> Path:
    """A model path that fails to load (a folder without config.json): reaching it means the model loads."""
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    return folder


def test_sft_reports_a_broken_data_line_before_loading_the_model(tmp_path, no_model) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(good_rows() + '{"prompt": "1 + 1 =", "completion": \n')  # line 5 is cut off
    with pytest.raises(UserError) as e:
        run_sft(sft_config(tmp_path, no_model, data))
    assert e.value.where == f"{data}:5" and "malformed JSON line" in e.value.what
    assert not (tmp_path / "runs").exists()  # and no empty run folder is left behind


def test_sft_reports_a_record_without_its_columns_before_loading_the_model(tmp_path, no_model) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(good_rows() + json.dumps({"prompt": "2 + 1 ="}) + "\n")
    with pytest.raises(UserError) as e:
        run_sft(sft_config(tmp_path, no_model, data))
    assert e.value.where == f"{data}, record 5" and "no column completion" in e.value.what


def test_rl_reports_a_broken_prompt_line_before_loading_the_model(tmp_path, no_model) -> None:
    cfg = rl_config(tmp_path, no_model)
    data = Path(cfg.data.path)
    data.write_text(data.read_text() + '{"prompt": "Write \n')
    with pytest.raises(UserError) as e:
        run_rl(cfg)
    assert e.value.where == f"{data}:9" and "malformed JSON line" in e.value.what
    assert not Path(cfg.train.output_dir).exists()


def test_a_bad_model_path_leaves_no_run_folder(tmp_path, no_model) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(good_rows())
    with pytest.raises(UserError, match=r"has no config\.json"):
        run_sft(sft_config(tmp_path, no_model, data))
    assert not (tmp_path / "runs").exists()
    cfg = rl_config(tmp_path / "rl", no_model)
    with pytest.raises(UserError, match=r"has no config\.json"):
        run_rl(cfg)
    assert not Path(cfg.train.output_dir).exists()


def test_an_existing_output_folder_is_kept_after_a_failed_start(tmp_path, no_model) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(good_rows())
    cfg = sft_config(tmp_path, no_model, data)
    Path(cfg.train.output_dir).mkdir(parents=True)
    with pytest.raises(UserError):
        run_sft(cfg)
    assert Path(cfg.train.output_dir).is_dir()  # the user's folder: not ours to remove


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_saved_model_files_get_the_umask_mode(tmp_path, tiny_model_dir, umask) -> None:
    model, tokenizer = load_model(
        validate(SFTConfig, {"data": {"path": "x"}}).model.model_copy(update={"path": str(tiny_model_dir)})
    )
    before = os.umask(umask)
    try:
        out = save_model(model, tokenizer, tmp_path / "final")
    finally:
        os.umask(before)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir() if f.is_file()}
    assert "model.safetensors" in modes and "config.json" in modes
    assert set(modes.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in modes.items()}
