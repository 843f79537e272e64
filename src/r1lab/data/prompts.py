"""RL prompt datasets: each prompt templated with the generation prompt, its other columns kept for rewards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from r1lab.config import DataConfig
from r1lab.data.formats import Conversation, normalise, resolve_schema
from r1lab.data.splits import SplitDataset, train_eval_records
from r1lab.data.tokenize import tokenize_prompt
from r1lab.errors import UserError

# Reward functions are called as fn(completion, *, prompt=..., **columns, completion_length=...,
# max_completion_length=...): a data column with one of these names is passed as "data_<name>" instead.
RESERVED = ("prompt", "completion", "completion_length", "max_completion_length")


@dataclass
class PromptExample:
    prompt_ids: list[int]  # templated prompt + generation prompt, tokenised
    prompt_text: str  # the raw text of the last user message
    columns: dict[str, Any] = field(default_factory=dict)  # every other column (answer, ...)


class PromptDataset(SplitDataset):
    """PromptExamples in dataset order; `stats` (total, dropped, kept) and `eval` (held-out PromptDataset|None)."""


def build_prompt_dataset(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0
) -> PromptDataset:
    """Prompts for RL. A `prompt` column (string or messages) is used as is; with `messages` or
    prompt + completion data the prompt is everything before the trained assistant turn(s). Prompts longer
    than data.max_length tokens are dropped (never cut: a cut question has no right answer) and counted."""
    train, held = train_eval_records(cfg, seed)
    eval_set = None if held is None else _build(held, cfg, tokenizer, cfg.eval_path or cfg.path)
    return _build(train, cfg, tokenizer, cfg.path, eval_set)


def _build(
    records: list[dict[str, Any]],
    cfg: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    eval_set: PromptDataset | None = None,
) -> PromptDataset:
    found = set().union(*records)
    schema = resolve_schema(found, cfg, source)
    if cfg.format == "auto" and schema.format == "messages" and "prompt" in schema.columns:
        # data with both (e.g. task files): the prompt column is the RL prompt; messages go to the rewards
        fmt = "prompt_completion" if "completion" in schema.columns else "prompt"
        schema = resolve_schema(found, cfg.model_copy(update={"format": fmt}), source)
    if schema.format == "preference" and "prompt" not in schema.columns:
        raise UserError(
            f"preference data in {source} has no `prompt` column to take RL prompts from",
            where="data.columns",
            fix="map the prompt column: data.columns: {prompt: <column>}",
        )
    stats = dict(total=len(records), dropped=0, kept=0)
    examples = []
    for i, record in enumerate(records):
        ex = normalise(record, schema, cfg, f"{source}, record {i + 1}")
        messages = ex.prompt if not isinstance(ex, Conversation) else _prompt_part(ex)
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise UserError(
                "a prompt has no user message",
                where=f"{source}, record {i + 1}",
                fix="give every example a non-empty prompt",
            )
        ids = tokenize_prompt(tokenizer, messages)
        if len(ids) > cfg.max_length:
            stats["dropped"] += 1
            continue
        columns = {f"data_{k}" if k in RESERVED else k: v for k, v in ex.columns.items()}
        if schema.format == "prompt_completion":  # the reference completion, for rewards or SFT mixing
            columns["data_completion"] = record.get(schema.columns["completion"])
        examples.append(PromptExample(ids, users[-1], columns))
    stats["kept"] = len(examples)
    if not examples:
        raise UserError(
            f"every prompt in {source} is longer than data.max_length ({cfg.max_length} tokens)",
            where="data.max_length",
            fix="raise data.max_length",
        )
    return PromptDataset(examples, stats, eval_set)


def _prompt_part(conv: Conversation) -> list[dict[str, Any]]:
    """The messages before the trained turns (prompt formats), or before the last assistant turn (messages)."""
    if conv.first_target:
        return conv.messages[: conv.first_target]
    last = max(
        (i for i, m in enumerate(conv.messages) if m["role"] == "assistant"), default=len(conv.messages)
    )
    return conv.messages[:last]
