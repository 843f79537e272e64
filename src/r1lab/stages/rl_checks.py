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


def check_before_rollout(cfg: RLConfig, runner: Any, tokenizer: Any, model: Any, *, read: Any = None) -> Any:
    """Tokenise the prompts (`read`: what `read_prompt_data` returned before the model loaded; and the held-out
    eval prompts, `.eval`, when data.eval_path or data.eval_fraction is set) and check them against the rewards
    and the model; returns the PromptDataset."""
    from r1lab.data import build_prompt_dataset

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
