"""Everything that can be wrong with an RL run's input, checked before the first rollout (fail fast).

Each check raises `UserError` naming what, where (config key, data file and record) and the fix.
"""

from __future__ import annotations

from typing import Any

from r1lab.algorithms.advantages import ADVANTAGES
from r1lab.algorithms.kl import KL_ESTIMATORS
from r1lab.algorithms.policy_losses import LOSS_AGGS, POLICY_LOSSES
from r1lab.config import RLConfig
from r1lab.errors import UserError
from r1lab.registry import Registry
from r1lab.stages.rl_episodes import check_tool_config, tool_prompts


def _known(registry: Registry, name: str, key: str) -> None:
    if name not in registry:
        raise UserError(
            f"unknown {registry.kind} {name!r}", where=key, fix=f"use one of: {', '.join(registry.names())}"
        )


def check_names(cfg: RLConfig) -> None:
    """Config-only checks: registered names and settings the loop cannot work with."""
    algo = cfg.algorithm
    _known(ADVANTAGES, algo.advantage, "algorithm.advantage")
    _known(POLICY_LOSSES, algo.policy_loss, "algorithm.policy_loss")
    _known(LOSS_AGGS, algo.loss_agg, "algorithm.loss_agg")
    _known(KL_ESTIMATORS, algo.kl_estimator, "algorithm.kl_estimator")
    if cfg.rollout.n < 2:  # the config schema already says so; kept for configs built with model_construct
        raise UserError(
            f"rollout.n is {cfg.rollout.n}: group-relative advantages need at least 2 completions per prompt",
            where="rollout.n",
            fix="set rollout.n to 2 or more (8 is typical)",
        )
    if cfg.rollout.temperature == 0:
        raise UserError(
            "rollout.temperature is 0 (greedy): every completion of a prompt is the same, so every advantage is 0",
            where="rollout.temperature",
            fix="sample with a temperature > 0, e.g. rollout.temperature=1.0",
        )
    check_sampler_filters(cfg)
    check_tool_config(cfg)


# objectives that never read pi_old (only the logged ratio does)
_NO_PI_OLD = {"gpg", "reinforce"}


def check_sampler_filters(cfg: RLConfig) -> None:
    """The sampler's top_p / top_k / min_p against the log-probs the loss uses (TRL #6789).

    The loss uses the trainer's log-probs over the full vocabulary (log_softmax(logits / T)), and so must
    pi_old and the importance weights. The HF engine reports exactly those (it samples from the filtered
    distribution but reports the unfiltered log-prob). vLLM reports `processed_logprobs`, renormalised over
    the tokens the filter kept: log pi_vllm = log pi - log S, S the kept mass, so pi_trainer / pi_vllm = S
    on every token, however well the weights agree. As pi_old (no correction) that ratio pushes every token
    with A < 0 past the clip when S < 1 - eps_low (no gradient left); as an importance weight it scales the
    loss by S. Both are refused; an objective that never reads pi_old (gpg) only gets skewed `mismatch/*`
    metrics, and a note says so.
    """
    r = cfg.rollout
    if r.engine != "vllm":
        return
    filters = [
        f"{k}={v}"
        for k, v, off in (("top_p", r.top_p, 1.0), ("top_k", r.top_k, 0), ("min_p", r.min_p, 0.0))
        if v != off
    ]
    if not filters:
        return
    where = ", ".join(f"rollout.{f}" for f in filters)
    correction = cfg.algorithm.rollout_correction is not None
    if not correction and cfg.algorithm.policy_loss in _NO_PI_OLD:
        from r1lab.training.tracking import console

        console.print(
            f"rl: note: with {where}, vLLM's log-probs are those of the filtered distribution, so "
            "mismatch/kl and mismatch/ratio_* measure the kept probability mass as well as the mismatch"
        )
        return
    use = "algorithm.rollout_correction's importance weights" if correction else "pi_old (the PPO ratio)"
    raise UserError(
        f"rollout.engine is vllm with {', '.join(filters)}: vLLM's log-probs are renormalised over the tokens "
        "the filter keeps, the trainer's are over the whole vocabulary, so their ratio is the kept "
        f"probability mass on every token, not a policy change; {use} would carry it (TRL #6789)",
        where=where,
        fix="sample from the full distribution (rollout.top_p: 1.0, rollout.top_k: 0, rollout.min_p: 0.0), or "
        "use rollout.engine: hf, whose log-probs are the unfiltered ones the loss uses",
    )


def check_before_rollout(cfg: RLConfig, runner: Any, tokenizer: Any, model: Any, *, read: Any = None) -> Any:
    """Tokenise the prompts (`read`: what `read_prompt_data` returned before the model loaded; and the held-out
    eval prompts, `.eval`, when data.eval_path or data.eval_fraction is set) and check them against the rewards
    and the model; returns the PromptDataset."""
    from r1lab.data import build_prompt_dataset, read_prompt_data

    if cfg.rollout.tools:  # episodes: each prompt rendered with the tools (rl_episodes)
        prompts = tool_prompts(cfg, tokenizer, read or read_prompt_data(cfg.data, seed=cfg.train.seed))
    else:
        prompts = build_prompt_dataset(cfg.data, tokenizer, seed=cfg.train.seed, read=read)
    if not prompts:
        raise UserError(
            "the prompt dataset is empty", where=f"data.path = {cfg.data.path}", fix="check the file"
        )
    context = _context_length(model)
    sets = [(prompts, cfg.data.path)]
    if prompts.eval is not None:
        sets.append((prompts.eval, cfg.data.eval_path or f"{cfg.data.path} (data.eval_fraction)"))
    for part, source in sets:
        runner.check_columns(set.intersection(*(set(p.columns) for p in part)))
        _check_fits(part, source, cfg.rollout.max_new_tokens, context)
    probe_rewards(runner, prompts[0])
    return prompts


def _check_fits(prompts: list[Any], source: str, budget: int, context: int | None) -> None:
    for i, p in enumerate(prompts):
        if context is not None and len(p.prompt_ids) + budget > context:
            raise UserError(
                f"prompt {i} has {len(p.prompt_ids)} tokens; with rollout.max_new_tokens={budget} it does not "
                f"fit the model's context of {context} tokens",
                where=f"{source}: record {i} (after templating)",
                fix="shorten or drop that prompt, lower rollout.max_new_tokens, or lower data.max_length so "
                "long prompts are dropped (and counted)",
            )


def probe_rewards(runner: Any, prompt: Any) -> None:
    """Call every reward once on an empty completion: a function returning the wrong type fails now, not
    mid-training (a raising function is only counted at run time: it may reject an empty string honestly)."""
    columns = {**prompt.columns, "completion_length": 0, "max_completion_length": 1}
    batch = runner.score([""], [prompt.prompt_text], [columns])
    for error in batch.errors:
        if error["error"].startswith("TypeError") and "must return" in error["error"]:
            index = runner.labels.index(error["reward"])
            raise UserError(
                error["error"].removeprefix("TypeError: "),
                where=f"rewards[{index}] (name={runner.rewards[index].spec.name!r})",
                fix="return a float (or None when the reward does not apply)",
            )


def _context_length(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
