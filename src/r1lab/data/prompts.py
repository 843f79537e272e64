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


@dataclass
class PromptRecord:
    number: int  # 1-based record number in the source
    messages: list[dict[str, Any]]  # the prompt messages (system, user, ...), before templating
    text: str  # the raw text of the last user message
    columns: dict[str, Any]  # the columns the rewards receive


@dataclass
class PromptRecords:
    """The prompts read and checked without a tokenizer (so a data mistake shows before any model loads)."""

    prompts: list[PromptRecord]
    source: str
    eval: PromptRecords | None = None


def read_prompt_data(cfg: DataConfig, *, seed: int = 0) -> PromptRecords:
    """Read and normalise RL prompts. A `prompt` column (string or messages) is used as is; with `messages`
    or prompt + completion data the prompt is everything before the trained assistant turn(s)."""
    train, held = train_eval_records(cfg, seed)
    eval_set = None if held is None else _read(held, cfg, cfg.eval_path or cfg.path)
    return _read(train, cfg, cfg.path, eval_set)


def build_prompt_dataset(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, read: PromptRecords | None = None
) -> PromptDataset:
    """Templated, tokenised prompts for RL from `read` (what `read_prompt_data` returned, else read now).
    Prompts longer than data.max_length tokens are dropped (never cut: a cut question has no right answer)
    and counted."""
    read = read or read_prompt_data(cfg, seed=seed)
    eval_set = None if read.eval is None else build_prompt_dataset(cfg, tokenizer, read=read.eval)
    return _build(read, cfg, tokenizer, eval_set)


def _read(
    records: list[dict[str, Any]], cfg: DataConfig, source: str, eval_set: PromptRecords | None = None
) -> PromptRecords:
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
    prompts = []
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
        columns = {f"data_{k}" if k in RESERVED else k: v for k, v in ex.columns.items()}
        if schema.format == "prompt_completion":  # the reference completion, for rewards or SFT mixing
            columns["data_completion"] = record.get(schema.columns["completion"])
        prompts.append(PromptRecord(i + 1, messages, users[-1], columns))
    return PromptRecords(prompts, source, eval_set)


def _build(
    read: PromptRecords, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, eval_set: PromptDataset | None
) -> PromptDataset:
    stats = dict(total=len(read.prompts), dropped=0, kept=0)
    examples = []
    for prompt in read.prompts:
        ids = tokenize_prompt(tokenizer, prompt.messages)
        if len(ids) > cfg.max_length:
            stats["dropped"] += 1
            continue
        examples.append(PromptExample(ids, prompt.text, prompt.columns))
    stats["kept"] = len(examples)
    if not examples:
        raise UserError(
            f"every prompt in {read.source} is longer than data.max_length ({cfg.max_length} tokens)",
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
