"""`r1lab doctor` on an RL stage: the stage's own checks and loading path (reward imports, data, model: the same
UserErrors), then a short rollout with the configured sampling, each reward on its completions, the sampler's
log-probs against the trainer's recompute, the accumulation check, one step's cost and the eval/train overlap."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from r1lab.config import RLConfig
from r1lab.data import read_prompt_data
from r1lab.doctor.checks import Check, accumulation_check, overlap_check, step_check, template_check
from r1lab.doctor.sft import data_check
from r1lab.models import load_model
from r1lab.rewards import RewardRunner
from r1lab.rollout import make_engine
from r1lab.rollout.types import SamplingParams
from r1lab.stages.rl_checks import check_before_rollout, check_names
from r1lab.stages.rl_episodes import with_tools
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.training.accel import build_accelerator, seed_everything

PROMPTS = 2  # prompts rolled out
MAX_N = 4  # completions per prompt, at most
MAX_NEW_TOKENS = 48  # tokens per completion, at most


def rl_checks(cfg: RLConfig, eval_path: str | None) -> list[Check]:
    check_names(cfg)
    seed_everything(cfg.train.seed)
    with RewardRunner(cfg.rewards) as runner:  # imports every reward function: a broken one fails here
        read = read_prompt_data(cfg.data, seed=cfg.train.seed)
        model, tokenizer = load_model(cfg.model, trainable=True)
        prompts = check_before_rollout(cfg, runner, tokenizer, model, read=read)
        accelerator, precision = build_accelerator(cfg.train, cfg.model)
        model = accelerator.prepare(model)
        policy = accelerator.unwrap_model(model)
        conversations = [
            ([*p.messages, {"role": "assistant", "content": str(p.columns.get("data_completion") or "42")}],
             len(p.messages)) for p in read.prompts[:32]
        ]  # fmt: skip
        checks = [
            template_check(tokenizer, policy, conversations, read.source),
            data_check(prompts.stats, [len(p.prompt_ids) for p in prompts], cfg.data.max_length, "drop"),
        ]
        engine = with_tools(cfg, make_engine(cfg.rollout, policy, tokenizer, seed=cfg.train.seed), tokenizer)
        sampling = SamplingParams.from_config(cfg.rollout, seed=cfg.train.seed)
        sampling = replace(sampling, max_new_tokens=min(sampling.max_new_tokens, MAX_NEW_TOKENS))
        shown = list(prompts[:PROMPTS])
        began = time.perf_counter()
        rollouts = engine.generate([p.prompt_ids for p in shown], min(cfg.rollout.n, MAX_N), sampling)
        generation = time.perf_counter() - began
        rows = [shown[i] for i in rollouts.prompt_index]
        columns = [
            {**r.columns, "completion_length": n, "max_completion_length": sampling.max_new_tokens}
            for r, n in zip(rows, rollouts.completion_lengths, strict=True)
        ]
        checks.append(reward_check(cfg, rollouts.texts, [r.prompt_text for r in rows], columns))
    temp = cfg.rollout.temperature or 1.0
    checks.append(logprob_check(policy, rollouts, accelerator.device, temp, precision, sampling))

    def tokens(idx: list[int]) -> float:
        return float(rollouts.select(idx).loss_mask.sum())

    def loss(idx: list[int], total: float) -> torch.Tensor:
        rows = rollouts.select(idx)
        logp, _ = completion_logprobs(model, policy, rows, accelerator.device, temp)
        # token-mean log-likelihood of the sampled completions (an episode: the model's tokens only)
        return -(logp * rows.loss_mask.to(logp.device)).sum() / total

    everything = list(range(len(rollouts)))
    checks.append(accumulation_check(loss, tokens, model, everything, precision))

    def micro() -> None:
        loss(everything, tokens(everything)).backward()
        model.zero_grad(set_to_none=True)

    steps = max(1, -(-cfg.prompts_per_step * cfg.rollout.n // max(len(rollouts), 1)))
    per_step = generation * steps
    # Scaled linearly from a small rollout and micro-batch: an upper bound, since the engine and the update batch a
    # whole step (the quickstart: 65 s estimated, 19.6 s a step measured).
    what = f"generation ({steps} x this rollout; scaled linearly, an upper bound)"
    checks.append(step_check(micro, model, steps, per_step, what))
    checks.append(overlap_check(cfg.data, eval_path or cfg.data.eval_path, cfg.data.columns))
    return checks


def reward_check(cfg: RLConfig, texts: list[str], prompts: list[str], columns: list[dict[str, Any]]) -> Check:
    """Each reward on the rollout's completions, alone (its own runner, so its time is its own)."""
    details, failed = [], []
    for i, spec in enumerate(cfg.rewards):
        with RewardRunner([spec]) as one:
            began = time.perf_counter()
            batch = one.score(texts, prompts, columns)
            seconds = time.perf_counter() - began
        values = next(iter(batch.per_function.values()))
        shown = ", ".join("None" if v is None else f"{v:g}" for v in values)
        fails = sum(batch.failures.values())
        details.append(
            f"rewards[{i}] {spec.name}: values [{shown}], {seconds / max(len(texts), 1) * 1000:.1f} ms per call, "
            f"{fails} of {len(texts)} calls failed"
        )
        if fails:
            failed.append((i, spec.name, batch.errors[0]["error"]))
    if failed:
        i, name, error = failed[0]
        return Check(
            "rewards",
            "fail",
            f"{len(failed)} of {len(cfg.rewards)} reward functions failed on the rollout: rewards[{i}] {name}: {error}",
            details,
            f"fix rewards[{i}] ({name}): a failed call gets failure_reward, so it trains on noise",
        )
    return Check("rewards", "ok", f"{len(cfg.rewards)} reward functions on {len(texts)} completions", details)


@torch.no_grad()
def logprob_check(policy: Any, rollouts: Any, device: Any, temperature: float, precision: str,
                  sampling: SamplingParams) -> Check:  # fmt: skip
    """The sampler's log-probs of its own tokens against the trainer's forward over the same rows."""
    was_training = policy.training
    policy.eval()
    try:
        trainer, _ = completion_logprobs(policy, policy, rollouts, device, temperature)
    finally:
        policy.train(was_training)
    mask = rollouts.loss_mask.to(device).bool()  # the sampled tokens (not an episode's tool results)
    diff = (trainer - rollouts.logprobs.to(device))[mask].abs()
    tol = 1e-3 if precision == "fp32" else 5e-2
    knobs = f"temperature {sampling.temperature:g}, top_p {sampling.top_p:g}, top_k {sampling.top_k}"
    summary = (
        f"{int(mask.sum())} sampled tokens ({knobs}): mean |Δ log p| {float(diff.mean()):.2e}, max "
        f"{float(diff.max()):.2e} (tolerance on the mean {tol:g}, {precision})"
    )
    if not torch.isfinite(diff).all() or float(diff.mean()) > tol:
        return Check(
            "sampler vs trainer log-probs",
            "fail",
            summary,
            fix="the policy ratio starts away from 1: make the engine report log_softmax(logits / temperature) "
            "of the unfiltered distribution, with the same weights, dtype and temperature as the trainer",
        )
    return Check("sampler vs trainer log-probs", "ok", summary)
