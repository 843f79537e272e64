"""SFT datasets: records -> conversations -> token ids with assistant-only labels, within max_length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from r1lab.config import DataConfig
from r1lab.data.formats import Conversation, normalise, resolve_schema
from r1lab.data.splits import SplitDataset, held_out, train_eval_records
from r1lab.data.tokenize import IGNORE, tokenize_conversation
from r1lab.data.tool_rows import prepare_tool_row, tool_schemas
from r1lab.errors import UserError


class SFTDataset(SplitDataset):
    """Examples `{"input_ids": [...], "labels": [...]}` in dataset order (labels -100 off the assistant turns).

    `stats` counts what happened to the records: total, skipped_no_assistant, truncated, dropped, kept,
    target_tokens. `eval` is the held-out SFTDataset (data.eval_path or data.eval_fraction) or None.
    """


@dataclass
class SFTRecords:
    """The data read and checked without a tokenizer (so a data mistake shows before any model loads):
    (record number, conversation) for every record with an assistant turn, and the held-out part."""

    conversations: list[tuple[int, Conversation]]
    total: int
    source: str
    eval: SFTRecords | None = None


def read_sft_data(cfg: DataConfig, *, seed: int = 0) -> SFTRecords:
    """Read and normalise the SFT data (format, columns, roles); `seed` draws the eval_fraction split."""
    train, held = train_eval_records(cfg, seed)
    # each record's number in the file (for file:line errors), where train_eval_records held a fraction out
    numbers = held_numbers = None
    if held is not None and not cfg.eval_path:
        out = held_out(len(train) + len(held), cfg.eval_fraction, seed)
        held_numbers = [i + 1 for i in sorted(out)]
        numbers = [i + 1 for i in range(len(train) + len(held)) if i not in out]
    eval_set = None if held is None else _read(held, cfg, cfg.eval_path or cfg.path, numbers=held_numbers)
    return _read(train, cfg, cfg.path, eval_set, numbers=numbers)


def build_sft_dataset(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, read: SFTRecords | None = None
) -> SFTDataset:
    """Template and tokenise the SFT data: `read` (what `read_sft_data` returned), else read it now."""
    read = read or read_sft_data(cfg, seed=seed)
    eval_set = None if read.eval is None else build_sft_dataset(cfg, tokenizer, read=read.eval)
    return _build(read, cfg, tokenizer, eval_set)


def _read(
    records: list[dict[str, Any]],
    cfg: DataConfig,
    source: str,
    eval_set: SFTRecords | None = None,
    numbers: list[int] | None = None,  # the records' numbers in the file; None: 1, 2, ... (the whole file)
) -> SFTRecords:
    schema = resolve_schema(set().union(*records), cfg, source)
    if schema.format not in ("messages", "prompt_completion"):
        raise UserError(
            f"SFT trains on conversations or prompt + completion pairs, but {source} is in format {schema.format!r}",
            where="data.format",
            fix="give the data a `messages` column or `prompt` + `completion` columns "
            "(e.g. data.columns: {completion: chosen} to train on preferred answers)",
        )
    conversations = []
    for i, record in enumerate(records):
        conv = normalise(record, schema, cfg, f"{source}, record {i + 1}")
        assert isinstance(conv, Conversation)
        prepare_tool_row(conv, source, numbers[i] if numbers else i + 1)  # tool rows: rendered as the rollout
        if conv.has_target():
            conversations.append((i + 1, conv))
    return SFTRecords(conversations, len(records), source, eval_set)


def _build(
    read: SFTRecords, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, eval_set: SFTDataset | None
) -> SFTDataset:
    source = read.source
    stats = dict(
        total=read.total,
        skipped_no_assistant=read.total - len(read.conversations),
        truncated=0,
        dropped=0,
        kept=0,
        target_tokens=0,
    )
    examples = []
    for number, conv in read.conversations:
        where = f"{source}, record {number}"
        try:
            ids, labels = tokenize_conversation(
                tokenizer, conv.messages, conv.first_target, tool_schemas(conv)
            )
        except UserError as e:
            raise UserError(
                e.what, where=f"{where}" + (f", {e.where}" if e.where else ""), fix=e.fix
            ) from None
        if len(ids) > cfg.max_length:
            # Truncation keeps the prompt and cuts the end; an example with no target left is dropped.
            if cfg.overlong == "drop" or all(label == IGNORE for label in labels[: cfg.max_length]):
                stats["dropped"] += 1
                continue
            ids, labels = ids[: cfg.max_length], labels[: cfg.max_length]
            stats["truncated"] += 1
        examples.append({"input_ids": ids, "labels": labels})
        stats["target_tokens"] += sum(label != IGNORE for label in labels)
    stats["kept"] = len(examples)
    if not examples:
        raise UserError(
            f"no training example left in {source}: {stats['total']} records, "
            f"{stats['skipped_no_assistant']} without an assistant turn, "
            f"{stats['dropped']} dropped as longer than max_length {cfg.max_length}",
            where="data.path / data.max_length",
            fix="check that conversations have assistant turns (or completions), or raise data.max_length",
        )
    return SFTDataset(examples, stats, eval_set)
