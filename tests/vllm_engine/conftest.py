"""Fixtures of the vLLM tests (run in .venv-vllm by `make test-vllm`; each test module skips itself
where vllm is not installed, as in the main venv's `make test`).

vLLM gets the same tiny random Llama as the unit tests but with 64-wide attention heads (vLLM's CPU attention
kernels take head sizes from 32 up, not the unit tests' 8); one engine per session (~7 s to start), which each
test points at its own model's weights with `update_weights`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # rl_testkit: the RL stage tests' set-up

from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import RolloutConfig
from tiny import build_model


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer random Llama (hidden 128, 2 query heads of 64, 1 KV head) and the tiny tokenizer."""
    path = tmp_path_factory.mktemp("tiny-llama-vllm")
    sizes = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "head_dim": 64}
    build_model(path, tiny_tokenizer, "llama", **sizes, num_key_value_heads=1)
    return path


def load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture
def model(vllm_model_dir):
    return load(vllm_model_dir)


@pytest.fixture
def tokenizer(vllm_model_dir):
    return AutoTokenizer.from_pretrained(vllm_model_dir)


@pytest.fixture(scope="session")
def engine(vllm_model_dir):
    """One vLLM engine for the session; a test hands it its model's weights first (update_weights)."""
    from r1lab.rollout.vllm import VLLMEngine

    engine = VLLMEngine(
        RolloutConfig(engine="vllm"), load(vllm_model_dir), AutoTokenizer.from_pretrained(vllm_model_dir)
    )
    yield engine
    del engine
