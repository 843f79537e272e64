"""`engine: auto`: vLLM where it can serve this run, else r1lab's HF engine, with the reason printed.

vLLM is chosen when it is installed, knows the model's architecture (its model registry) and the run has none of
the settings only the HF engine supports: multi-turn tool episodes (`rollout.tools`), FSDP2 sharding (the policy
generates with its gathered shards) and, in RL, top_p/top_k/min_p sampling (vLLM's log-probs are renormalised over
the kept tokens, which the loss does not use; see stages/rl_checks.py). `engine: vllm` is the way to insist on
vLLM: it fails with the reason where auto falls back. Keys read only by vLLM (gpu_memory_utilization, vllm_mode)
are refused with auto at validation, so nothing the user set is dropped by a fallback.
"""

from __future__ import annotations

import importlib.util
from typing import Any, get_args

from r1lab.config import RolloutConfig
from r1lab.errors import UserError

# the engine names RolloutConfig accepts: one list, read from its Literal
ENGINES: tuple[str, ...] = get_args(RolloutConfig.model_fields["engine"].annotation)


def check_engine_name(name: str, where: str) -> None:
    """A CLI's --engine value, refused before any model loads when RolloutConfig would not take it."""
    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r}", where=where, fix=", ".join(ENGINES))


def choose_engine(
    cfg: RolloutConfig, model: Any, *, training: bool = False, sharded: bool = False
) -> tuple[str, str]:
    """("hf" | "vllm", why) for a rollout config whose engine is auto, generating with `model`."""
    if cfg.tools:
        return "hf", "rollout.tools: multi-turn tool episodes run on the hf engine"
    if sharded:
        return "hf", "train.distributed: fsdp2 generates with the policy's gathered shards"
    filters = [
        k for k, on in (("top_p", cfg.top_p < 1), ("top_k", cfg.top_k > 0), ("min_p", cfg.min_p > 0)) if on
    ]
    if training and filters:
        return "hf", f"{', '.join(filters)}: vLLM's log-probs would be renormalised over the kept tokens"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "vllm is not installed here (`make test-vllm` builds .venv-vllm with it)"
    archs = list(getattr(model.config, "architectures", None) or [])
    from vllm import ModelRegistry

    supported = set(ModelRegistry.get_supported_archs())
    if not archs or not any(a in supported for a in archs):
        name = archs[0] if archs else model.config.model_type
        return "hf", f"vLLM does not support the architecture {name}"
    return "vllm", f"vllm is installed and supports {archs[0]}"


def resolve_engine(
    cfg: RolloutConfig, model: Any, *, training: bool = False, sharded: bool = False
) -> RolloutConfig:
    """`cfg` with engine auto replaced by the engine `choose_engine` picks (printed); other engines as they are."""
    if cfg.engine != "auto":
        return cfg
    engine, why = choose_engine(cfg, model, training=training, sharded=sharded)
    print(f"rollout.engine: auto -> {engine} ({why})", flush=True)
    return cfg.model_copy(update={"engine": engine})
