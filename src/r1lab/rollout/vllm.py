"""Rollouts with vLLM (GPU, optional install), colocated with the trainer in the same process.

vLLM holds its own copy of the weights: the RL loop calls `engine.update_weights(model)` after every
update, and that sync is not wired yet (it raises), so RL refuses `rollout.engine: vllm` for now.
Log-probs come from vLLM with logprobs_mode="processed_logprobs" (after temperature; vLLM also applies its
top-k/top-p there), which differs from the HF engine's unfiltered tempered log-probs whenever
top_k/top_p/min_p are set; with plain temperature sampling they agree.

Not exercised by the CPU test suite (vllm needs CUDA); kept small and on vLLM's public API where one exists.
"""

from __future__ import annotations

import torch

from r1lab.config import RolloutConfig
from r1lab.rollout.types import Rollouts, SamplingParams


class VLLMEngine:
    name = "vllm"

    def __init__(self, cfg: RolloutConfig, model: torch.nn.Module, tokenizer, *, seed: int = 0) -> None:
        from vllm import LLM

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        dtype = next(base.parameters()).dtype
        self.tokenizer = tokenizer
        self.pad_token_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.llm = LLM(
            model=base.config.name_or_path,
            tokenizer=getattr(tokenizer, "name_or_path", None) or base.config.name_or_path,
            dtype=str(dtype).removeprefix("torch."),
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            seed=seed + (torch.distributed.get_rank() if distributed else 0),
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,  # the n samples of a prompt share its prefill
            distributed_executor_backend="external_launcher" if distributed else None,
        )

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            VSamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else -1,
                min_p=sampling.min_p,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None,
                include_stop_str_in_output=True,  # as the HF engine: the text keeps its stop string
                logprobs=0,  # the sampled token's log-prob only
                seed=None if sampling.seed is None else sampling.seed + i,
            )
            for i in range(len(prompt_ids))
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False
        )
        rows = [(i, c) for i, out in enumerate(outputs) for c in out.outputs]
        width = max((len(c.token_ids) for _, c in rows), default=0)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        logps = torch.zeros((len(rows), width), dtype=torch.float32)
        for r, (_, c) in enumerate(rows):
            tokens = list(c.token_ids)
            ids[r, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            if c.logprobs:
                logps[r, : len(tokens)] = torch.tensor(
                    [lp[t].logprob for t, lp in zip(tokens, c.logprobs, strict=True)]
                )
        lengths = torch.tensor([len(c.token_ids) for _, c in rows], dtype=torch.long)
        return Rollouts(
            prompt_index=[i for i, _ in rows],
            prompt_ids=[list(prompt_ids[i]) for i, _ in rows],
            completion_ids=ids,
            completion_mask=(torch.arange(width)[None, :] < lengths[:, None]).long(),
            logprobs=logps,
            finish_reasons=["length" if c.finish_reason == "length" else "stop" for _, c in rows],
            texts=[c.text for _, c in rows],
            pad_token_id=self.pad_token_id,
        )

    def update_weights(self, model: torch.nn.Module) -> None:
        """Push the training weights into vLLM: not wired yet, so this refuses instead of leaving vLLM sampling
        from stale weights. The sync must go through vLLM's public V1 API (`LLM.collective_rpc` calling the
        workers' `load_weights`); the V0 internals (`llm_engine.model_executor.driver_worker`) are gone. Until
        then the RL config refuses `rollout.engine: vllm` (RLConfig) and only generation without updates
        (e.g. an eval) may use this engine."""
        raise NotImplementedError(
            "VLLMEngine.update_weights is not implemented: the weight sync through vLLM's V1 API "
            "(LLM.collective_rpc / load_weights) is tracked in the engine issue; use rollout.engine: hf"
        )
