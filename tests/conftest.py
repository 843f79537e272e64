from __future__ import annotations

import os
import sys
from pathlib import Path

# Before huggingface_hub/datasets are imported: they read it once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
# Tiny-model matmuls gain nothing from threads, and on a busy 2-core machine threads cost 5-30x; subprocesses
# (torchrun, the CLI) inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_model, build_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A folder holding a tiny random Llama-style model and its tokenizer (HF format)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_model(path, tiny_tokenizer, arch="llama")
    return path


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("tiny-qwen")
    build_model(path, tiny_tokenizer, arch="qwen2")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep every test's model cache away from the user's ~/.cache/r1lab (the slow tests opt back in)."""
    monkeypatch.setenv("R1LAB_HOME", str(tmp_path / "r1lab-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
