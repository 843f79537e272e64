"""The RL stage (GRPO family): sample prompts, roll out, score, compute advantages, update, log, checkpoint.

One readable loop; the pieces live in `rl_batch.py` (rollout + scoring + gather across ranks, the micro-batch
update), `rl_forward.py` (the policy forward, each prompt run once for its G completions), `rl_log.py`
(metrics.jsonl records, samples.jsonl), `rl_eval.py` (greedy eval on the held-out prompts) and
`rl_checks.py` (everything that can be wrong with the input, checked before the first rollout).

Choices worth knowing:
- pi_old is the rollout policy: its log-probs come with the rollouts and are not recomputed, except with
  `rollout.async` or `algorithm.rollout_correction` (then the trainer recomputes them before the update and the
  sampler's log-probs enter only through the importance weights: `rl_mismatch.off_policy_plan`). With mu == 1
  the ratio is 1 up to numerics (the update forward vs the decode forward), so the clip never bites and the
  gradient is -A * grad(logp); with mu > 1 the same rollout log-probs stay pi_old for every update.
- A "step" is one generation batch; it makes `algorithm.mu` optimizer updates. `train.batch_size` is the
  micro-batch (sequences per forward); `train.grad_accum` is refused (RLConfig): the number of micro-batches
  follows from the generation batch (prompts_per_step x G rows across all processes).
- The reference model (beta > 0) is a frozen copy of the initial weights, made after `accelerator.prepare`
  (on the policy's device), or for LoRA the same model with its adapters disabled. beta == 0 loads none.
- After each step's updates the engine is sent the weights (`engine.update_weights`; the HF engine shares
  them, so only an engine with its own copy does any work).
- `rollout.async`: the next batch is generated in a background thread while the update runs, with weights
  one update old, and pi_old is recomputed by the trainer (`rl_async.py` has the design).
- Prompts longer than data.max_length are dropped and counted (never cut). With data.eval_path or
  data.eval_fraction the held-out prompts are evaluated (greedy, the run's rewards) every train.eval_every
  steps and after the last one, logged as `eval/*` in metrics.jsonl.
- Generation is seeded per generate call from (train.seed, prompt position), so a resumed run and a run on a
  different number of processes draw the same samples for the same prompts.
- A step whose loss or gradient is NaN/inf makes no update, writes no checkpoint and is counted
  (`skipped_steps`); `max_bad_steps` of them in a row stop the run with a UserError naming the last good
  checkpoint. samples.jsonl gets every completion of step 1 and of every `samples_every`-th step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from r1lab.config import RLConfig, dump_config
from r1lab.errors import UserError
from r1lab.rollout.types import Rollouts
from r1lab.stages.rl_async import AsyncRollouts
from r1lab.stages.rl_batch import (
    Scored,
    advantages_for,
    flat_groups,
    optimizer_updates,
    plan_update,
    rollout_and_score,
    select_rows,
)
from r1lab.stages.rl_checks import check_before_rollout, check_names
from r1lab.stages.rl_episodes import with_tools
from r1lab.stages.rl_eval import evaluate_policy
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.stages.rl_hacking import HackingMonitor, monitored_specs
from r1lab.stages.rl_log import (
    RewardFailureStop,
    drop_samples_after,
    reward_errors_path,
    step_metrics,
    write_samples,
)
from r1lab.stages.rl_mismatch import off_policy_plan, rollout_mismatch
from r1lab.stages.rl_prompt_filter import filter_prompts
from r1lab.stages.rl_prompt_stats import PromptStats
from r1lab.stages.rl_temperature import with_probed_temperature


def run_rl(cfg: RLConfig) -> Path:
    """Train with RL from `cfg`; returns the folder of the final model (the merged one for LoRA + merge)."""
    from r1lab.rewards import RewardRunner
    from r1lab.training.backends import require_backends

    check_names(cfg)
    require_backends(cfg.train.report_to)
    # imports every reward function: a broken one fails here
    with RewardRunner(monitored_specs(cfg), errors_path=reward_errors_path(cfg)) as runner:
        return _train(cfg, runner)


def _train(cfg: RLConfig, runner: Any) -> Path:
    from r1lab.data import read_prompt_data
    from r1lab.models import load_model
    from r1lab.rewards.verifier import carry_marker
    from r1lab.rollout import make_engine
    from r1lab.rollout.engine_choice import resolve_engine
    from r1lab.training.accel import build_accelerator, prepare_model, seed_everything
    from r1lab.training.checkpoint import DiskFull, save_checkpoint, save_final
    from r1lab.training.data_order import EpochOrder
    from r1lab.training.fsdp import check_rl_shardable, full_weights
    from r1lab.training.interrupt import StopFlag, StopRequested
    from r1lab.training.optim import build_optimizer, build_scheduler
    from r1lab.training.resume import restore, resume_point
    from r1lab.training.rundir import ensure_writable, write_state
    from r1lab.training.tracking import Tracker, console

    out = ensure_writable(cfg.train.output_dir)
    accelerator, _ = build_accelerator(cfg.train, cfg.model)
    main = accelerator.is_main_process
    seed_everything(cfg.train.seed)
    resume_from = resume_point(cfg.train, out)  # a folder holding an earlier run is refused before any work
    read = read_prompt_data(cfg.data, seed=cfg.train.seed)  # a data mistake shows before any model loads
    model, tokenizer = load_model(cfg.model, trainable=True)
    # engine: auto becomes hf or vllm here, before the checks read it
    rollout = resolve_engine(cfg.rollout, model, training=True, sharded=cfg.train.distributed == "fsdp2")
    if rollout is not cfg.rollout:  # a copy only for auto: the caller's config object stays the one read
        cfg = cfg.model_copy(update={"rollout": rollout})
    prompts = check_before_rollout(cfg, runner, tokenizer, model, read=read)
    resumed = resume_from is not None  # RIF-RFT: drop prompts by the initial policy's pass rate (if asked)
    prompts = filter_prompts(cfg, prompts, model, tokenizer, runner, out, accelerator, resumed=resumed)

    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * len(prompts) / cfg.prompts_per_step)
    if cfg.train.distributed == "fsdp2":  # the reference: a whole copy, made before the policy is sharded
        check_rl_shardable(cfg)
        reference = make_reference(model.to(accelerator.device), cfg)
    model = prepare_model(accelerator, model, cfg.train)  # DDP, or sharded by FSDP2 (train.distributed)
    optimizer = accelerator.prepare(build_optimizer(model, cfg.optim))
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps * cfg.algorithm.mu)
    policy = accelerator.unwrap_model(model)
    if cfg.train.distributed == "ddp":
        reference = make_reference(policy, cfg)  # after prepare: a full copy lands on the policy's device
    engine = with_tools(cfg, make_engine(cfg.rollout, policy, tokenizer, seed=cfg.train.seed), tokenizer)
    runner.place(accelerator.device)  # learned rewards (model:PATH) score on the policy's device
    hacking = HackingMonitor.of(cfg, runner)  # learned reward vs verifier (rl_hacking.py)
    temp = cfg.rollout.temperature or 1.0  # greedy rollouts report temperature-1 log-probs

    step, position, bad_in_row, skipped = 0, 0, 0, 0
    failing_rewards = RewardFailureStop(cfg.max_reward_failure_steps, out)
    if resume_from is not None:
        # the prompt stream position only means the same prompts with the same batch shape
        must_match = {
            "prompts_per_step": (cfg.prompts_per_step, "prompts_per_step"),
            "rollout_n": (cfg.rollout.n, "rollout.n"),
        }
        meta = restore(resume_from, accelerator, model, optimizer, scheduler, must_match)
        step, position, skipped = meta["step"], meta["prompt_position"], meta.get("skipped_steps", 0)
        engine.update_weights(policy)  # an engine with its own copy (vLLM) was made before the restore
    if main:
        out.mkdir(parents=True, exist_ok=True)  # only now: a failed start leaves no empty run folder
        dump_config(cfg, out / "config.yaml")
        write_state(out, "running", step=step, total_steps=total_steps)
        drop_samples_after(out / "samples.jsonl", step)
        console.print(f"rl: {_prompt_counts(prompts, cfg)}")
    if cfg.target_entropy is not None:  # AceReason: the sampling temperature from a probe batch
        with full_weights(policy):  # FSDP2: generation runs whole weights (see r1lab.training.fsdp)
            cfg = with_probed_temperature(
                cfg, engine, policy, prompts, out, accelerator.device, resumed=resumed, main=main
            )
        temp = cfg.rollout.temperature
    order = EpochOrder(len(prompts), 1, cfg.train.seed, shuffle=cfg.data.shuffle).at  # position -> prompt
    producer = AsyncRollouts(cfg, engine, policy, tokenizer, runner) if cfg.rollout.async_ else None
    prompt_stats = PromptStats(out, prompts, order, runner, step) if main else None  # Metis-RISE's accuracy
    tracker = Tracker(
        out,
        enabled=main,
        total_steps=total_steps,
        start_step=step,
        report_to=list(cfg.train.report_to),
        key_metric="reward/mean",
        description="rl",
        config=cfg.model_dump(mode="json"),
    )

    def checkpoint() -> None:
        meta = {
            "prompt_position": position,
            "skipped_steps": skipped,
            "prompts_per_step": cfg.prompts_per_step,
            "rollout_n": cfg.rollout.n,
        }
        save_checkpoint(
            accelerator, model, tokenizer, optimizer, scheduler, out, step, meta, cfg.train.save_total_limit
        )

    try:
        with StopFlag() as stop:  # Ctrl-C / SIGTERM: stop at the next step boundary, with a checkpoint
            while step < total_steps:
                model.train()
                started = time.perf_counter()
                # ---- roll out and score (dynamic sampling: drop flat groups, refill from the next prompts)
                if producer is None:
                    with full_weights(policy):  # FSDP2: ranks generate different numbers of tokens
                        batch, seen = sample_batch(cfg, engine, runner, prompts, order, position)
                else:  # async: take the batch generated during the last update, start the next one
                    batch, seen, staleness = _async_batch(
                        cfg, producer, policy, prompts, order, position, step, total_steps
                    )
                position += len(seen) * cfg.prompts_per_step
                advantages = advantages_for(batch, cfg.algorithm.advantage, cfg.algorithm.mask_truncated)

                # ---- update (mu optimizer steps on the same rollouts)
                t_train = time.perf_counter()
                plan = plan_update(batch.rollouts, advantages, cfg)
                correction = cfg.algorithm.rollout_correction
                if producer is not None or correction is not None:
                    # pi_old: the trainer's log-probs at the current weights; with a correction, IS weights
                    plan, mismatch = off_policy_plan(policy, plan, accelerator.device, temp, correction)
                    if producer is not None:
                        mismatch["async/staleness"] = staleness
                else:  # an engine with its own weights (vLLM): its log-probs vs the trainer's, before the update
                    hf = engine.name == "hf"
                    mismatch = {} if hf else rollout_mismatch(policy, plan, accelerator.device, temp)
                sums, grad_norm, lr, bad = optimizer_updates(
                    model, plan, cfg, accelerator, optimizer, scheduler, reference
                )
                if producer is None:  # async: the sampler gets them at the top of the next step
                    engine.update_weights(policy)  # an engine with its own copy of the weights (vLLM)
                t_done = time.perf_counter()
                step += 1
                bad_in_row = bad_in_row + 1 if bad else 0
                skipped += int(bad)

                # ---- log
                metrics = step_metrics(batch, seen, sums, runner) | mismatch
                metrics |= hacking.update(seen) if hacking is not None else {}
                gen_s = sum(s.gen_seconds for s in seen)
                metrics.update(
                    {
                        "grad_norm": grad_norm,
                        "lr": lr,  # the one the update used (the scheduler has moved on since)
                        "skipped_steps": skipped,
                        "bad_step": int(bad),
                        "refills": len(seen) - 1,
                        "time/generation": gen_s,
                        "time/reward": sum(s.reward_seconds for s in seen),
                        "time/training": t_done - t_train,
                        "time/step": t_done - started,
                        "tokens_per_s": sum(s.rollouts.num_tokens for s in seen) / max(gen_s, 1e-9),
                    }
                    | ({"async/wait": producer.waited} if producer is not None else {})
                )
                if step % cfg.train.log_every == 0 or step == total_steps or bad:
                    tracker.log(step, metrics)
                tracker.advance(step)
                if hacking is not None:  # warn, or checkpoint and stop (reward_hacking)
                    hacking.act(step, metrics, out, checkpoint, main)
                if main and (step % cfg.samples_every == 0 or step == 1):
                    write_samples(out / "samples.jsonl", step, batch, advantages)
                if prompt_stats is not None:
                    prompt_stats.update(step, seen)
                if bad_in_row >= cfg.max_bad_steps:
                    raise _diverged(cfg, out, step, bad_in_row)
                failing_rewards.check(step, seen)  # a reward that failed on every call for N steps stops it
                # no checkpoint of a bad step: the newest checkpoint stays the last good one
                if (
                    cfg.train.save_every
                    and step % cfg.train.save_every == 0
                    and step < total_steps
                    and not bad
                ):
                    checkpoint()
                    if main:
                        write_state(out, "running", step=step, total_steps=total_steps)
                every = cfg.train.eval_every  # (the config refuses it without held-out prompts)
                if prompts.eval is not None and every and step % every == 0 and step < total_steps:
                    if producer is not None:
                        producer.wait()  # the reward runner serves one caller at a time
                    with full_weights(policy):
                        tracker.log(step, evaluate_policy(policy, tokenizer, prompts.eval, runner, cfg))
                stop.check(accelerator)
    except BaseException as stopped:
        tracker.close()
        if isinstance(stopped, StopRequested):
            checkpoint()
        if main and not isinstance(stopped, DiskFull):  # a full disk has marked state.json failed
            write_state(out, "interrupted", step=step, total_steps=total_steps)
        raise
    finally:
        if producer is not None:
            producer.close()  # no thread left running, whatever ended the loop
    if prompts.eval is not None:  # and always after the last step
        with full_weights(policy):
            tracker.log(step, evaluate_policy(policy, tokenizer, prompts.eval, runner, cfg))
    tracker.close()
    checkpoint()
    merge = bool(cfg.model.lora and cfg.model.lora.merge_on_save)
    final = save_final(accelerator, model, tokenizer, out, merge_lora=merge)
    if main:
        carry_marker(final, data_path=cfg.data.path, model_path=cfg.model.path)  # a generative verifier's
        write_state(out, "complete", step=step, total_steps=total_steps, model=str(final))
    accelerator.wait_for_everyone()
    return final


def sample_batch(
    cfg: RLConfig,
    engine: Any,
    runner: Any,
    prompts: list[Any],
    order: Callable[[int], int],
    position: int,
    first: Scored | None = None,
) -> tuple[Scored, list[Scored]]:
    """Roll out and score the next prompts_per_step prompts; returns the batch to train on and every scored
    round (for logging). With dynamic sampling, groups whose rewards are all equal are dropped and the next
    prompts are drawn until prompts_per_step groups are kept or max_refills rounds are spent; if no group at
    all survives, the last round is trained as it is (its advantages are 0: only a KL term moves the model).
    `first`: the first round, already generated (async)."""
    rounds = 1 + (cfg.algorithm.max_refills if cfg.algorithm.dynamic_sampling else 0)
    seen: list[Scored] = []
    kept: Scored | None = None
    for r in range(rounds):
        positions = list(range(position, position + cfg.prompts_per_step))
        position += cfg.prompts_per_step
        scored = (
            first
            if r == 0 and first is not None
            else rollout_and_score(engine, runner, [prompts[order(p)] for p in positions], positions, cfg)
        )
        seen.append(scored)
        if not cfg.algorithm.dynamic_sampling:
            return scored, seen
        flat = flat_groups(scored.rewards, scored.rollouts.prompt_index)
        rows = [i for i, g in enumerate(scored.rollouts.prompt_index) if g not in flat]
        if rows:
            part = select_rows(scored, rows)
            kept = part if kept is None else _concat(kept, part)
        if kept is not None and len(set(kept.rollouts.prompt_index)) >= cfg.prompts_per_step:
            break
    if kept is None:
        return seen[-1], seen
    groups = list(dict.fromkeys(kept.rollouts.prompt_index))[: cfg.prompts_per_step]
    return select_rows(kept, [i for i, g in enumerate(kept.rollouts.prompt_index) if g in set(groups)]), seen


def _async_batch(
    cfg: RLConfig,
    producer: AsyncRollouts,
    policy: torch.nn.Module,
    prompts: list[Any],
    order: Callable[[int], int],
    position: int,
    step: int,
    total_steps: int,
) -> tuple[Scored, list[Scored], int]:
    """Step `step + 1` of an async run: its batch (refilled by the same sampler), the sampler then given the
    current weights and the next batch submitted, unless this step checkpoints or is the last. Returns the
    batch, its rounds and its staleness (updates between the weights it was sampled with and the current)."""

    def share(first: int) -> tuple[list[Any], list[int]]:
        positions = list(range(first, first + cfg.prompts_per_step))
        return [prompts[order(p)] for p in positions], positions

    if not producer.in_flight:  # generated now: from the current weights
        producer.sync(policy, step)
    first, version = producer.take(*share(position))
    batch, seen = sample_batch(cfg, producer.engine, producer.runner, prompts, order, position, first=first)
    producer.sync(policy, step)
    save = cfg.train.save_every
    if step + 1 < total_steps and not (save and (step + 1) % save == 0):
        producer.submit(*share(position + len(seen) * cfg.prompts_per_step))
    return batch, seen, step - version


class Reference:
    """Reference log-probs for the KL term: a frozen copy of the policy's initial weights on the policy's
    device (build it after `accelerator.prepare` has moved the policy), or for LoRA the policy itself with its
    adapters switched off (no second copy of the weights)."""

    def __init__(self, policy: torch.nn.Module, lora: bool) -> None:
        self.lora = lora
        self.model = policy if lora else copy.deepcopy(policy).eval().requires_grad_(False)

    def __call__(self, rows: Rollouts, device: Any, temperature: float) -> torch.Tensor:
        with torch.no_grad(), self.model.disable_adapter() if self.lora else nullcontext():
            return completion_logprobs(self.model, self.model, rows, device, temperature)[0]


def make_reference(policy: torch.nn.Module, cfg: RLConfig) -> Reference | None:
    """The reference for `cfg`, from the prepared (unwrapped) policy; None when beta == 0 (nothing loaded)."""
    return Reference(policy, cfg.model.lora is not None) if cfg.algorithm.beta > 0 else None


def _prompt_counts(prompts: Any, cfg: RLConfig) -> str:
    """'N prompts (M longer than data.max_length dropped)', and the same for the held-out eval prompts."""

    def counts(part: Any) -> str:
        dropped = part.stats["dropped"]
        return f"{part.stats['kept']} prompts ({dropped} longer than {cfg.data.max_length} tokens dropped)"

    held = f"; eval: {counts(prompts.eval)}" if prompts.eval is not None else ""
    return f"train: {counts(prompts)}{held}"


def _concat(a: Scored, b: Scored) -> Scored:
    from dataclasses import replace

    per_function = {k: a.per_function.get(k, []) + b.per_function.get(k, []) for k in b.per_function}
    return replace(
        b,
        rollouts=Rollouts.concat([a.rollouts, b.rollouts]),
        rewards=torch.cat([a.rewards, b.rewards]),
        per_function=per_function,
        prompt_texts=a.prompt_texts + b.prompt_texts,
    )


def _diverged(cfg: RLConfig, out: Path, step: int, count: int) -> UserError:
    from r1lab.training.checkpoint import find_latest_checkpoint

    last = find_latest_checkpoint(out)
    return UserError(
        f"training diverged: {count} steps in a row had a NaN/inf loss or gradient (up to step {step}); "
        "those steps were skipped and the run stopped",
        where=f"{out / 'metrics.jsonl'} (bad_step = 1)",
        fix="lower optim.lr, check the rewards for huge values, or raise max_bad_steps; the last good "
        + (f"checkpoint is {last}" if last else "state has no checkpoint (set train.save_every)"),
    )
