"""Multi-turn tool episodes in the RL stage: `rollout.tools` (+ `rollout.max_turns`, `rollout.max_episode_tokens`).

With tools set, every rollout of the stage is an episode of r1lab.rollout.multiturn (the model calls tools in
the `<tool_call>` format, r1lab runs them and appends the results, up to max_turns model turns), as TRL's
`GRPOTrainer(tools=...)` and verl's multi-turn agent loop do:
- the prompts are rendered with the tools (`tool_prompts`: the template's `tools=` schemas, or the tagged
  fallback's system prompt), from the same records and with the same data.max_length drop rule;
- `EpisodeEngine` wraps the configured engine behind the same `generate` interface, so the loop, async
  rollouts, the temperature probe and `r1lab doctor` run episodes unchanged; its Rollouts carry
  `loss_mask` (the model's tokens only: tool results are attended to but get no loss, no KL, no entropy and
  do not count in any token mean), `texts` = each episode's last model turn (what the rewards score) and
  `extras` (tool_calls, tool_errors, ... passed to the rewards as columns; the whole episode text for
  samples.jsonl);
- `tool_metrics` logs tools/* each step (calls, errors, truncated outputs, turns per episode, how episodes end);
- the periodic eval on held-out prompts runs one greedy episode per prompt (r1lab.stages.rl_eval).
Refused (`check_tool_config`): the vllm engine (not tested with episodes yet).
"""

from __future__ import annotations

from typing import Any

from r1lab.config import RLConfig
from r1lab.errors import UserError
from r1lab.rollout.types import Rollouts, SamplingParams


def check_tool_config(cfg: RLConfig) -> None:
    """Combinations the episode rollout does not support, refused before anything loads."""
    if not cfg.rollout.tools:
        return
    if cfg.rollout.engine == "vllm":  # auto picks hf for tool episodes
        raise UserError(
            f"rollout.tools with rollout.engine {cfg.rollout.engine!r}: multi-turn tool episodes are only "
            "supported (and tested) with the hf engine so far",
            where="rollout.engine",
            fix="set rollout.engine: hf, or remove rollout.tools for single-turn vllm rollouts",
        )


def build_tools(cfg: RLConfig, tokenizer: Any) -> Any:
    """The run's ToolFormat (its toolbox and the tokenizer's tool format), from rollout.tools."""
    from r1lab.rollout.multiturn import ToolFormat
    from r1lab.tools import build_toolbox

    return ToolFormat(tokenizer, build_toolbox(list(cfg.rollout.tools), where="rollout.tools"))


def tool_prompts(cfg: RLConfig, tokenizer: Any, read: Any) -> Any:
    """The PromptDataset of `read` (r1lab.data.read_prompt_data's records, and their .eval) with each prompt
    rendered with the tools; prompts over data.max_length tokens are dropped and counted, as without tools."""
    from r1lab.data.prompts import PromptDataset, PromptExample

    fmt = build_tools(cfg, tokenizer)

    def build(part: Any) -> Any:
        examples = [PromptExample(fmt.prompt_ids(p.messages), p.text, p.columns) for p in part.prompts]
        kept = [e for e in examples if len(e.prompt_ids) <= cfg.data.max_length]
        if not kept:
            raise UserError(
                f"every prompt in {part.source}, rendered with the tools of rollout.tools, is longer than "
                f"data.max_length ({cfg.data.max_length} tokens)",
                where="data.max_length",
                fix="raise data.max_length (the tool instructions take room in every prompt)",
            )
        stats = {"total": len(examples), "dropped": len(examples) - len(kept), "kept": len(kept)}
        return PromptDataset(kept, stats, None if part.eval is None else build(part.eval))

    return build(read)


class EpisodeEngine:
    """A rollout engine whose `generate` runs multi-turn tool episodes on `engine` (r1lab.rollout.multiturn):
    n episodes per prompt, returned as Rollouts with the loss mask of the model's tokens."""

    def __init__(self, engine: Any, tokenizer: Any, fmt: Any, max_turns: int, max_episode_tokens: int | None):
        self.engine, self.tokenizer, self.fmt = engine, tokenizer, fmt
        self.max_turns, self.max_episode_tokens = max_turns, max_episode_tokens
        self.name = engine.name  # "hf": it generates with the trainer's weights, as the engine it wraps
        self.pad_token_id = getattr(engine, "pad_token_id", None)

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        from r1lab.rollout.multiturn import run_episodes

        episodes = run_episodes(
            self.engine,
            self.tokenizer,
            self.fmt.toolbox,
            prompt_ids,
            n,
            sampling,
            max_turns=self.max_turns,
            max_episode_tokens=self.max_episode_tokens,
            fmt=self.fmt,
        )
        return episodes.to_rollouts()

    def update_weights(self, model: Any) -> None:
        self.engine.update_weights(model)


def with_tools(cfg: RLConfig, engine: Any, tokenizer: Any) -> Any:
    """`engine` itself without rollout.tools, else the EpisodeEngine running episodes on it."""
    if not cfg.rollout.tools:
        return engine
    r = cfg.rollout
    return EpisodeEngine(engine, tokenizer, build_tools(cfg, tokenizer), r.max_turns, r.max_episode_tokens)


def tool_metrics(rows: list[dict[str, Any]], prefix: str = "tools/") -> dict[str, float]:
    """tools/* over episodes' extras (nothing for single-turn rollouts): per-episode means of tool calls,
    tool errors (unknown tool, bad JSON or arguments, a failed or timed-out call), truncated tool outputs and
    model turns; the fraction of episodes ending each way (answer, max_turns, length, budget)."""
    if not rows:
        return {}
    n = len(rows)
    out = {
        f"{prefix}{key}_per_episode": sum(x[key] for x in rows) / n
        for key in ("tool_calls", "tool_errors", "tool_truncated", "turns")
    }
    for reason in ("answer", "max_turns", "length", "budget"):
        out[f"{prefix}finish/{reason}"] = sum(x["episode_finish"] == reason for x in rows) / n
    return out
