"""Asynchronous one-step off-policy RL (`rollout.async: true`): the next batch is generated and scored while
the current update runs.

Design (as in the one-step-off pipelines of verl, SkyRL and NeMo-RL; staleness bound 1, not configurable):
- A producer, one background thread per process (each DDP rank its own), runs `rl_batch.local_round` (this
  rank's generation and scoring, no collective), so it never talks to the process group while the trainer's
  DDP all-reduces run; the main thread gathers its result (`gather_round`) when it takes it.
- The sampler has its own weights. With the HF engine it is a copy of the policy (eval mode, no gradients;
  one more copy of the weights in memory) whose trained parameters `sync` copies from the trainer (for LoRA
  the adapters only); a vLLM engine holds its own copy already and gets `update_weights`. The sampler is
  never written while it generates. (FSDP2 refuses async: r1lab.training.fsdp.)
- At the top of step k the loop takes batch k (submitted at the top of step k-1, generated from the weights
  after k-2 updates), runs any dynamic-sampling refills of it synchronously with the same sampler (same weight
  version), pushes the current weights (k-1 updates) to the sampler, submits batch k+1 and then updates on
  batch k. So every trained batch is exactly one version old (`async/staleness` = 1), except a batch generated
  synchronously (staleness 0): the first one, the one after a checkpoint step, the first after a resume.
- pi_old is the trainer's recomputation at the current weights, before the update (one no-grad forward per
  micro-batch, `rl_mismatch.off_policy_plan`), not the sampler's log-probs: the PPO ratio of the first update
  is then 1 and clips the trainer's own moves, not the staleness. The sampler's (behaviour) log-probs go into the
  mismatch metrics (`mismatch/kl`, `mismatch/ratio_max`, `mismatch/ratio_min`: their gap to pi_old, staleness
  included); `algorithm.rollout_correction` turns that gap into importance weights.
- `async/wait` is logged each step: the seconds the trainer waited for its batch (near 0 when generation hid
  entirely behind the previous update; the whole generation for a batch made on the spot).
- Checkpoints: a checkpoint step submits nothing; the batch after it is generated after the update, from the
  checkpointed weights. So a run killed after a checkpoint and resumed draws the same samples from the same
  weights as an uninterrupted one (same parameters, tested). A stop by Ctrl-C / SIGTERM checkpoints at
  whatever step it lands on: the in-flight batch is discarded (the thread is joined first, so none is left
  running) and regenerated on resume, from the same prompts and seeds but the checkpointed weights (one
  version newer than the uninterrupted run would have used).
- Eval steps wait for the in-flight batch first (the reward runner serves one caller at a time).
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from r1lab.config import RLConfig
from r1lab.stages.rl_batch import Scored, gather_round, local_round


@dataclass
class _Pending:
    future: Future
    position: int  # the first prompt position of the batch
    version: int  # the weight version (updates done) the sampler held when it was submitted


class AsyncRollouts:
    """The producer thread and its sampler. `take` / `submit` / `sync` are called by the training loop only."""

    def __init__(self, cfg: RLConfig, engine: Any, policy: torch.nn.Module, tokenizer: Any, runner: Any):
        from r1lab.rollout import make_engine
        from r1lab.stages.rl_episodes import with_tools

        self.cfg, self.runner = cfg, runner
        self.model: torch.nn.Module | None = None
        if engine.name == "hf":  # it shares the trainer's weights: the sampler needs a copy of its own
            self.model = copy.deepcopy(policy).eval().requires_grad_(False)
            engine = make_engine(cfg.rollout, self.model, tokenizer, seed=cfg.train.seed)
            engine = with_tools(cfg, engine, tokenizer)  # rollout.tools: episodes (rl_episodes)
        self.engine = engine
        self.version = 0  # updates done by the weights the sampler holds
        self.generations: list[int] = []  # the version each generate round ran with, in order (for tests)
        self.waited = 0.0  # seconds the last `take` blocked the trainer (the whole round when made then)
        # a new thread starts with the default number of torch threads, not the trainer's
        self._pool = ThreadPoolExecutor(
            1, "r1lab-rollout", initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)
        )
        self._pending: _Pending | None = None

    def sync(self, policy: torch.nn.Module, version: int) -> None:
        """Give the sampler the trainer's current weights (`version` updates done). Never while it generates."""
        assert self._pending is None or self._pending.future.done(), "sync while the sampler generates"
        if version == self.version:
            return
        if self.model is not None:  # the trained parameters only: the others (a LoRA base) never change
            with torch.no_grad():
                for mine, theirs in zip(self.model.parameters(), policy.parameters(), strict=True):
                    if theirs.requires_grad:
                        mine.copy_(theirs)
        else:
            self.engine.update_weights(policy)
        self.version = version

    def submit(self, prompts: list[Any], positions: list[int]) -> None:
        """Start generating and scoring this rank's share of `prompts` (global `positions`) in the thread."""
        self._pending = _Pending(
            self._pool.submit(self._round, prompts, positions), positions[0], self.version
        )

    @property
    def in_flight(self) -> bool:
        return self._pending is not None

    def take(self, prompts: list[Any], positions: list[int]) -> tuple[Scored, int]:
        """The round of `positions` (gathered from every rank) and the weight version it was generated with:
        the one in flight, or, when none is (first step, after a checkpoint step or a resume), made now (sync
        the sampler first)."""
        pending, self._pending = self._pending, None
        started = time.perf_counter()
        if pending is None:
            local, version = self._round(prompts, positions), self.version
        elif pending.position != positions[0]:  # the loop's bookkeeping and the producer's disagree
            raise RuntimeError(f"the batch in flight starts at prompt {pending.position}, not {positions[0]}")
        else:
            local, version = pending.future.result(), pending.version
        self.waited = time.perf_counter() - started
        return gather_round(local), version

    def wait(self) -> None:
        """Block until the batch in flight (if any) is generated and scored; it stays to be taken."""
        if self._pending is not None:
            self._pending.future.exception()

    def close(self) -> None:
        """Join the thread (a generation under way finishes first); the batch in flight is dropped."""
        self._pending = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _round(self, prompts: list[Any], positions: list[int]) -> Any:
        self.generations.append(self.version)
        return local_round(self.engine, self.runner, prompts, positions, self.cfg)
