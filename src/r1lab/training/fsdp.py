"""FSDP2 (`train.distributed: fsdp2`): weights, gradients and optimizer state sharded over the processes.

torch's `fully_shard` is applied to each decoder layer and then to the whole model, so a forward all-gathers
one layer at a time and a backward reduce-scatters its gradients (averaged over ranks, as DDP does). accelerate
still forms the process group, picks the device and runs autocast, but its own FSDP plugin is not used: it
switches FSDP on only for GPU process groups (AcceleratorState leaves a gloo CPU group as MULTI_CPU, plain DDP),
and r1lab applies the same torch API itself so one code path runs on CPU (gloo) and GPU (NCCL).

- Checkpoints are sharded: `sharded/` holds torch.distributed.checkpoint files (each rank writes its own
  shard of the weights and of the optimizer state); the scheduler and RNG states go in trainer_state.pt as
  for DDP. They resume on the same number of processes.
- The final model is one merged HF folder: the full state dict is gathered onto rank 0, which writes it
  with `save_model`, so `from_pretrained` loads it.
- Generation and evaluation run a different number of forwards on each rank (lengths differ); inside
  `full_weights` every sharded module is all-gathered once and stays whole, so those forwards need no
  collective, and the shards are restored after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from r1lab.errors import UserError

SHARDED_DIR = "sharded"  # in a checkpoint folder: the torch.distributed.checkpoint files of every rank


def is_sharded(model: Any) -> bool:
    return isinstance(model, FSDPModule)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks FSDP2 shards one by one: the model's largest ModuleList (its decoder layers)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        raise UserError(
            f"{type(model).__name__} has no list of decoder layers for FSDP2 to shard",
            where="train.distributed",
            fix="use train.distributed: ddp for this model",
        )
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


def check_shardable(model: torch.nn.Module) -> None:
    """Refuse what FSDP2 does not train here: a LoRA (peft) model."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise UserError(
            "train.distributed: fsdp2 does not train LoRA adapters (the adapter is small: sharding it gains "
            "nothing, and the merged export needs the base weights gathered)",
            where="train.distributed / model.lora",
            fix="use train.distributed: ddp with model.lora, or remove model.lora to shard the full model",
        )


def check_rl_shardable(cfg: Any) -> None:
    """Refuse the RL settings that need the whole weights outside `full_weights`: an engine with its own copy
    (vLLM is sent the weights after each update) and asynchronous rollouts (generation during the update)."""
    if cfg.rollout.engine == "vllm" or getattr(cfg.rollout, "async_", False):  # auto was resolved to hf
        raise UserError(
            "train.distributed: fsdp2 generates with the training model itself (its shards gathered for the "
            "rollout); rollout.engine: vllm and rollout.async need the whole weights sent elsewhere",
            where="train.distributed / rollout",
            fix="use train.distributed: ddp with rollout.engine: vllm or rollout.async, or the hf engine "
            "without async under fsdp2",
        )


def shard_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move `model` to `device` and shard it in place (each decoder layer, then the root); returns it.
    Build the optimizer afterwards: sharding replaces the parameters."""
    model.to(device)
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def _fsdp_modules(model: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def full_weights(model: Any) -> Iterator[None]:
    """Inside: every sharded module holds its full weights, and forwards neither gather nor free them (so
    ranks may run different numbers of forwards, as generation and evaluation do). A no-op unsharded."""
    if not is_sharded(model):
        yield
        return
    modules = _fsdp_modules(model)
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)  # fully_shard's default: root whole


def save_sharded(model: torch.nn.Module, optimizer: Any, folder: Path) -> None:
    """Write this rank's shard of the weights and optimizer state into `folder/sharded` (collective)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, inner)}
    dcp.save(state, checkpoint_id=str(folder / SHARDED_DIR))


def load_sharded(model: torch.nn.Module, optimizer: Any, folder: Path) -> None:
    """Restore the weights and optimizer state `save_sharded` wrote (collective; same process count)."""
    if not (folder / SHARDED_DIR).is_dir():
        raise UserError(
            f"checkpoint {folder} holds no sharded state ({SHARDED_DIR}/): it was written by a DDP run",
            where="train.distributed",
            fix="resume with the train.distributed the run was started with",
        )
    inner = getattr(optimizer, "optimizer", optimizer)
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, inner)}
    dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, inner, state["optimizer"])


def gathered_model(model: torch.nn.Module, main: bool) -> torch.nn.Module | None:
    """An unsharded copy of `model` on rank 0's CPU, with the full weights gathered from every rank
    (collective: call on every rank; the others get None). It is what `save_model` writes as final/."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not main:
        return None
    # fully_shard turns the model's class into FSDP<cls>(FSDPModule, cls): build a plain <cls>
    cls = next(c for c in type(model).__mro__[1:] if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        plain = cls(model.config)
    plain.load_state_dict(full, assign=True, strict=False)
    plain.tie_weights()  # a tied LM head points at the embedding again
    missing = sorted(k for k, v in plain.state_dict().items() if v.is_meta)
    if missing:
        raise RuntimeError(f"the gathered state dict lacks {missing[:3]}")
    plain.generation_config = model.generation_config
    return plain.eval()
