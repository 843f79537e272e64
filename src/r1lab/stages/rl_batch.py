"""One RL generation batch: roll out, score, gather across ranks, filter groups, compute advantages, and the
policy update over micro-batches. `stages/rl.py` strings these together into the training loop.

Multi-process layout. Each rank generates and scores a contiguous slice of the step's prompts; the rows are
then gathered so every rank holds the whole batch (rewards, groups, advantages are identical everywhere and
a group may span ranks). For the update each rank takes a contiguous slice of the kept rows again, split into
the same number of micro-batches on every rank (DDP needs matching backward calls). Loss normalisers
(`LossTotals`) are counted over the whole batch, and each rank's loss is scaled by world_size because DDP
averages gradients: the summed update equals the one-process update.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from r1lab.algorithms.advantages import ADVANTAGES
from r1lab.algorithms.policy_losses import (
    LossTotals,
    compute_policy_loss,
    mask_truncated_completions,
    sum_metrics,
)
from r1lab.config import RLConfig
from r1lab.rollout.types import Rollouts, SamplingParams
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.training.distributed import all_reduce_sum, gather_objects, world


def split_even(n: int, parts: int) -> list[range]:
    """Contiguous ranges covering range(n), sizes differing by at most one (earlier ranges larger)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (i < extra)
        out.append(range(start, start + size))
        start += size
    return out


def generation_seed(seed: int, position: int) -> int:
    """Seed of the generate call whose first prompt is the `position`-th prompt drawn in the run.

    Keyed on the global prompt position, not on rank or step, so the same prompts get the same samples
    whatever the number of processes (when each rank's share is a multiple of rollout.batch_size) and after
    a resume.
    """
    return (seed * 1_000_003 + position) % 2**63


@dataclass
class Scored:
    """A generation round, gathered from all ranks: rows grouped by prompt (group id = prompt position)."""

    rollouts: Rollouts
    rewards: Tensor  # [N] weighted total, NaN where no function gave a score
    per_function: dict[str, list[float | None]]
    failures: dict[str, int]
    errors: list[dict]
    prompt_texts: list[str]  # per row
    gen_seconds: float  # wall time of the slowest rank
    reward_seconds: float


def rollout_and_score(
    engine: Any, runner: Any, prompts: list[Any], positions: list[int], cfg: RLConfig
) -> Scored:
    """Generate G completions for this rank's share of `prompts` (global positions `positions`), score them,
    and gather everything from all ranks. Timings are the slowest rank's."""
    return gather_round(local_round(engine, runner, prompts, positions, cfg))


def local_round(
    engine: Any, runner: Any, prompts: list[Any], positions: list[int], cfg: RLConfig
) -> tuple[Any, tuple[float, float]]:
    """This rank's part of `rollout_and_score`, without any collective (so a background thread may run it):
    its rows and their scores, and its (generation, reward) seconds. `gather_round` makes the Scored."""
    rank, size = world()
    share = split_even(len(prompts), size)[rank]
    chunk = cfg.rollout.batch_size or max(len(share), 1)
    base = SamplingParams.from_config(cfg.rollout)
    parts: list[Rollouts] = []
    started = time.perf_counter()
    for start in range(share.start, share.stop, chunk):
        idx = list(range(start, min(start + chunk, share.stop)))
        sampling = replace(base, seed=generation_seed(cfg.train.seed, positions[idx[0]]))
        out = engine.generate([prompts[i].prompt_ids for i in idx], cfg.rollout.n, sampling)
        out.prompt_index = [positions[idx[j]] for j in out.prompt_index]
        parts.append(out)
    generated = time.perf_counter()
    payload = None
    if parts:
        local = _to_cpu(Rollouts.concat(parts))  # gathered by pickling: CPU tensors unpickle on any rank
        by_pos = dict(zip(positions, prompts, strict=True))
        rows = [by_pos[p] for p in local.prompt_index]
        extras = local.extras or [{} for _ in rows]  # episodes: tool_calls etc. (rewards.tool_use reads them)
        columns = [
            {**r.columns, **episode_columns(x), "completion_length": n,
             "max_completion_length": cfg.rollout.max_new_tokens}
            for r, n, x in zip(rows, local.completion_lengths, extras, strict=True)
        ]  # fmt: skip
        texts = [r.prompt_text for r in rows]
        batch = runner.score(local.texts, texts, columns)
        payload = (local, batch.total.float(), batch.per_function, batch.failures, batch.errors, texts)
    return payload, (generated - started, time.perf_counter() - generated)


def episode_columns(extras: dict[str, Any]) -> dict[str, Any]:
    """The columns a reward gets from an episode's extras: its counts (tool_calls, ...), not its text."""
    return {k: v for k, v in extras.items() if k != "episode_text"}


def gather_round(local: tuple[Any, tuple[float, float]]) -> Scored:
    """Every rank's `local_round`, gathered into the round's Scored (the same on every rank)."""
    gathered = gather_objects(local)
    done = [g[0] for g in gathered if g[0] is not None]
    per_function: dict[str, list[float | None]] = {}
    failures: dict[str, int] = {}
    for part in done:
        for name, values in part[2].items():
            per_function.setdefault(name, []).extend(values)
        for name, count in part[3].items():
            failures[name] = failures.get(name, 0) + count
    return Scored(
        rollouts=Rollouts.concat([p[0] for p in done]),
        rewards=torch.cat([p[1] for p in done]),
        per_function=per_function,
        failures=failures,
        errors=[e for p in done for e in p[4]],
        prompt_texts=[t for p in done for t in p[5]],
        gen_seconds=max(g[1][0] for g in gathered),
        reward_seconds=max(g[1][1] for g in gathered),
    )


def _to_cpu(r: Rollouts) -> Rollouts:
    return replace(
        r,
        completion_ids=r.completion_ids.cpu(),
        completion_mask=r.completion_mask.cpu(),
        logprobs=r.logprobs.cpu(),
        loss_mask=r.loss_mask.cpu(),
    )


def flat_groups(rewards: Tensor, groups: list[int]) -> set[int]:
    """Group ids whose valid rewards are all equal (or that have < 2 valid ones): no learning signal."""
    by_group: dict[int, list[float]] = {}
    for g, r in zip(groups, rewards.tolist(), strict=True):
        if not math.isnan(r):
            by_group.setdefault(g, []).append(r)
    return {g for g in set(groups) if len(set(by_group.get(g, []))) < 2}


def select_rows(scored: Scored, keep: list[int]) -> Scored:
    return replace(
        scored,
        rollouts=scored.rollouts.select(keep),
        rewards=scored.rewards[keep],
        per_function={k: [v[i] for i in keep] for k, v in scored.per_function.items()},
        prompt_texts=[scored.prompt_texts[i] for i in keep],
    )


def advantages_for(scored: Scored, name: str, mask_truncated: bool = False) -> Tensor:
    """Advantages of the batch; `lengths` are the loss tokens per row (the final mask: with mask_truncated,
    truncated rows have none), for the estimators whose statistics are token-weighted (reinforce_pp)."""
    r = scored.rollouts
    groups = torch.tensor(r.prompt_index, dtype=torch.long)
    mask = mask_truncated_completions(r.loss_mask, r.finish_reasons) if mask_truncated else r.loss_mask
    lengths = mask.sum(-1).float()
    return ADVANTAGES.get(name)(scored.rewards.float(), groups, lengths=lengths).float()


@dataclass
class UpdatePlan:
    """This rank's rows for the update and the global loss normalisers."""

    rows: Rollouts  # this rank's rows, loss mask already final
    advantages: Tensor  # [n_local]
    micro_batches: list[list[int]]  # indices into rows; same count on every rank; [] = a zero-weight dummy
    totals: LossTotals
    # [n_local, T] stop-gradient importance weights of the rows (algorithm.rollout_correction); None: all 1
    is_weights: Tensor | None = None


def plan_update(batch: Rollouts, advantages: Tensor, cfg: RLConfig) -> UpdatePlan:
    """Split the batch's rows over ranks and micro-batches. The loss normalisers count every row, but rows
    whose advantage is 0 are not run when there is no KL or entropy term: their loss and gradient are exactly 0
    (flat groups, often most of them early or late in training), so leaving them out changes nothing."""
    rank, size = world()
    dummy = batch.select([0])  # before any masking: a zero-weight pass needs at least one token
    if cfg.algorithm.mask_truncated:  # the loss mask only: a multi-turn row still attends to its tool results
        batch = replace(batch, loss_mask=mask_truncated_completions(batch.loss_mask, batch.finish_reasons))
    totals = LossTotals.from_mask(batch.loss_mask, cfg.rollout.max_new_tokens)
    active = batch.loss_mask.sum(-1) > 0
    if cfg.algorithm.beta == 0 and cfg.algorithm.entropy_coef == 0:
        active &= advantages != 0
    keep = active.nonzero().squeeze(-1).tolist()
    shares = split_even(len(keep), size)
    n_micro = max(1, math.ceil(len(shares[0]) / cfg.train.batch_size))
    mine = [keep[i] for i in shares[rank]]
    micro = [list(r) for r in split_even(len(mine), n_micro)]
    # a rank with nothing to train still makes its passes (zero-weight, on row 0) so DDP stays in step
    rows = batch.select(mine) if mine else dummy
    return UpdatePlan(rows, advantages[mine] if mine else advantages[:1] * 0, micro, totals)


def policy_update(
    model: torch.nn.Module,
    plan: UpdatePlan,
    cfg: RLConfig,
    accelerator: Any,
    reference: Any | None,
) -> dict[str, Tensor]:
    """Forward + backward over this rank's micro-batches (gradients accumulate; DDP syncs on the last one).

    Returns metric sums over this rank (loss, clip counts, kl, entropy, tokens); all-reduce them to log.
    """
    algo = cfg.algorithm
    eps_low, eps_high = algo.clip_range()
    temperature = cfg.rollout.temperature or 1.0  # greedy rollouts report temperature-1 log-probs
    _, size = world()
    device = accelerator.device
    parts: list[dict[str, Tensor]] = []
    inner = accelerator.unwrap_model(model)
    for i, idx in enumerate(plan.micro_batches):
        dummy = not idx  # this rank has fewer rows than micro-batches: a zero-weight pass keeps DDP in step
        rows = plan.rows.select(idx or [0])
        sync = i == len(plan.micro_batches) - 1
        weights = None
        if plan.is_weights is not None:  # cut to the micro-batch's width, as select cuts the rows
            weights = plan.is_weights[idx or [0], : rows.completion_ids.shape[1]].to(device)
        with nullcontext() if sync else accelerator.no_sync(model):
            logp, entropy = completion_logprobs(
                model, inner, rows, device, temperature, entropy_grad=algo.entropy_coef > 0
            )
            ref_logp = reference(rows, device, temperature) if reference else None
            trained = rows.loss_mask.to(device).bool()
            # pi_old off the loss mask (tool results) = pi_theta: ratio 1 there, whatever the sampler reported
            old_logp = torch.where(trained, rows.logprobs.to(device), logp.detach())
            loss, metrics = compute_policy_loss(
                algo.policy_loss,
                logp,
                old_logp,
                plan.advantages[idx or [0]].to(device),
                trained.float(),  # tool-result tokens: attended to, not trained on
                loss_agg=algo.loss_agg,
                eps_low=eps_low,
                eps_high=eps_high,
                totals=plan.totals,
                ref_logp=ref_logp,
                beta=algo.beta,
                kl_estimator=algo.kl_estimator,
                entropy=entropy,
                entropy_coef=algo.entropy_coef,
                tau_pos=algo.sapo_tau_pos,
                tau_neg=algo.sapo_tau_neg,
                is_weights=weights,
            )
            weight = 0.0 if dummy else 1.0
            accelerator.backward(loss * (weight * size))
        metrics = {k: v * weight for k, v in metrics.items()}
        metrics["loss"] = loss.detach() * weight
        parts.append(metrics)
    return sum_metrics(parts)


def optimizer_updates(
    model: torch.nn.Module,
    plan: UpdatePlan,
    cfg: RLConfig,
    accelerator: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    reference: Any | None,
) -> tuple[dict[str, Tensor], float, float, bool]:
    """`algorithm.mu` optimizer steps on one generation batch (pi_old and the importance weights stay the same for all).

    Returns the last update's metric sums (all ranks), its grad norm, its learning rate (the one the optimizer
    step used, read before the scheduler moves on) and whether it was bad: a NaN/inf loss or gradient skips
    the optimizer and scheduler step (the weights and Adam moments stay as they were) and ends the updates of
    this batch.
    """
    sums: dict[str, Tensor] = {}
    grad_norm, lr = 0.0, 0.0
    max_norm = cfg.optim.max_grad_norm or math.inf
    for _ in range(cfg.algorithm.mu):
        lr = float(scheduler.get_last_lr()[0])
        sums = all_reduce_sum(policy_update(model, plan, cfg, accelerator, reference))
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
        if not (math.isfinite(grad_norm) and math.isfinite(float(sums["loss"]))):
            optimizer.zero_grad(set_to_none=True)
            return sums, grad_norm, lr, True
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return sums, grad_norm, lr, False
