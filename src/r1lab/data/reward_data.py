"""Reward-model data: labelled completions (pointwise) or preference pairs (pairwise) -> token ids.

Pointwise rows: `prompt` + `completion` (strings or messages) + `label` (0 or 1; true/false accepted); pairwise
rows: `chosen` + `rejected` (+ `prompt`), read as DPO reads them (r1lab.data.preference). `data.columns` maps
other column names onto these, e.g. {label: is_correct}. A sequence is the chat-templated conversation (prompt,
then the completion as the assistant turn) and the reward is read at its last token, so a sequence longer than
data.max_length keeps its last max_length tokens (data.overlong: truncate) or is dropped (drop); counted.
Bad input names its place (`file:line` for a JSONL file): a missing column, a label that is not 0/1, pairs given
to a pointwise loss (or the reverse), and training labels of one class only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from r1lab.config import DataConfig
from r1lab.data.formats import Conversation, normalise, resolve_schema
from r1lab.data.preference import _places, read_preference_data
from r1lab.data.splits import SplitDataset, held_out, train_eval_records
from r1lab.data.tokenize import render
from r1lab.errors import UserError

LABELS = {0: 0, 1: 1}  # False / True and 0.0 / 1.0 equal these and hash alike, so they are accepted too


@dataclass
class RewardRecords:
    """Checked rows without a tokenizer: (place, conversation(s), label) each; pairs hold
    (prompt + chosen, prompt + rejected) and label 1."""

    rows: list[tuple[str, list[list[dict[str, Any]]], int]]
    source: str
    eval: RewardRecords | None = None


class RewardDataset(SplitDataset):
    """Examples {"ids": [[token ids] per sequence (1 pointwise, 2 pairwise: chosen, rejected)], "label"}."""


def conversation(prompt: str, completion: str, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """The messages a (prompt, completion) string pair is scored as."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def reward_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of the templated conversation (the completion as the last assistant turn)."""
    return tokenizer(render(tokenizer, messages, generation_prompt=False), add_special_tokens=False)[
        "input_ids"
    ]


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, right-padded (a sequence-classification head reads the last
    non-pad token)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def read_reward_data(cfg: DataConfig, *, pairwise: bool, loss: str, seed: int = 0) -> RewardRecords:
    """Read and check the rows before any model loads; `seed` draws the data.eval_fraction split."""
    records, held = train_eval_records(cfg, seed)
    found = resolve_schema(set().union(*records), cfg, cfg.path).format
    if found == "preference" and not pairwise:
        raise UserError(
            f"{cfg.path} holds preference pairs (chosen/rejected), but loss {loss!r} is pointwise",
            where="loss",
            fix="set loss: bradley_terry for pairs, or give rows prompt, completion and label (0/1)",
        )
    if pairwise:
        if found != "preference":
            raise UserError(
                f"loss {loss!r} trains on pairs, but {cfg.path} is in format {found!r} (no chosen/rejected)",
                where="loss",
                fix="set loss: bce for labelled (prompt, completion, label) rows, or give chosen and "
                "rejected columns",
            )
        pairs = read_preference_data(cfg, seed=seed)
        held_pairs = pairs.eval
        return _pair_rows(pairs, cfg.path, None if held_pairs is None else _pair_rows(held_pairs, "", None))
    train, held_placed = placed_splits(cfg, records, held, seed)
    held_set = (
        None if held_placed is None else _read(held_placed, cfg, cfg.eval_path or cfg.path, training=False)
    )
    return _read(train, cfg, cfg.path, held_set)


Placed = list[tuple[str, dict[str, Any]]]  # (place: file:line, record)


def placed_splits(
    cfg: DataConfig, records: list[dict[str, Any]], held: list[dict[str, Any]] | None, seed: int
) -> tuple[Placed, Placed | None]:
    """The training and held-out records of `train_eval_records(cfg, seed)`, each with its place."""
    if held is None:
        return list(zip(_places(cfg.path, len(records)), records, strict=True)), None
    if cfg.eval_path:
        train = list(zip(_places(cfg.path, len(records)), records, strict=True))
        return train, list(zip(_places(cfg.eval_path, len(held)), held, strict=True))
    every = _places(cfg.path, len(records) + len(held))
    out = held_out(len(every), cfg.eval_fraction, seed)
    held_placed = list(zip([p for i, p in enumerate(every) if i in out], held, strict=True))
    train = list(zip([p for i, p in enumerate(every) if i not in out], records, strict=True))
    return train, held_placed


def _pair_rows(pairs: Any, source: str, held: RewardRecords | None) -> RewardRecords:
    rows = [(place, [p.prompt + p.chosen, p.prompt + p.rejected], 1) for place, p in pairs.pairs]
    return RewardRecords(rows, source or pairs.source, held)


def _read(
    placed: list[tuple[str, dict[str, Any]]],
    cfg: DataConfig,
    source: str,
    held: RewardRecords | None = None,
    *,
    training: bool = True,
) -> RewardRecords:
    key = "data.path" if training or not cfg.eval_path else "data.eval_path"
    schema = resolve_schema(set().union(*(r for _, r in placed)), cfg, source)
    if schema.format != "prompt_completion":
        raise UserError(
            f"a pointwise reward model trains on (prompt, completion, label) rows, but {source} is in format "
            f"{schema.format!r}",
            where=key,
            fix="give the rows prompt, completion and label columns (or map yours with data.columns, e.g. "
            "{completion: answer, label: correct})",
        )
    column = cfg.columns.get("label", "label")
    rows = []
    for place, record in placed:
        conv = normalise(record, schema, cfg, place)
        assert isinstance(conv, Conversation)
        if "label" not in conv.columns:
            raise UserError(
                f"a row has no label column {column!r}; its columns: {', '.join(sorted(record))}",
                where=place,
                fix="give every row a label of 0 or 1 (or map your column with data.columns: {label: ...})",
            )
        value = conv.columns["label"]
        if isinstance(value, (bool, int, float)) and value in LABELS:
            rows.append((place, [conv.messages], LABELS[value]))
            continue
        raise UserError(
            f"label {value!r} is not 0 or 1",
            where=f"{place}, column {column!r}",
            fix="labels are 0 (bad) or 1 (good); for graded preferences give chosen/rejected pairs and use "
            "loss: bradley_terry",
        )
    classes = {label for *_, label in rows}
    if training and len(classes) < 2:  # held-out rows of one class are allowed (AUC is then not defined)
        raise UserError(
            f"all {len(rows)} training rows of {source} have label {classes.pop()}: a reward model needs both "
            "classes",
            where=key,
            fix="add rows of the other label, or train on chosen/rejected pairs with loss: bradley_terry",
        )
    return RewardRecords(rows, source, held)


def build_reward_dataset(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, read: RewardRecords
) -> RewardDataset:
    """Template and tokenise the rows (and the held-out ones); cut or drop those over max_length (counted)."""
    held = None if read.eval is None else build_reward_dataset(cfg, tokenizer, read.eval)
    stats = {"total": len(read.rows), "truncated": 0, "dropped": 0, "kept": 0}
    examples = []
    for place, conversations, label in read.rows:
        try:
            ids = [reward_ids(tokenizer, messages) for messages in conversations]
        except UserError as e:
            raise UserError(e.what, where=place + (f", {e.where}" if e.where else ""), fix=e.fix) from None
        if max(len(s) for s in ids) > cfg.max_length:
            if cfg.overlong == "drop":
                stats["dropped"] += 1
                continue
            ids = [s[-cfg.max_length :] for s in ids]
            stats["truncated"] += 1
        examples.append({"ids": ids, "label": label})
    stats["kept"] = len(examples)
    if not examples:
        raise UserError(
            f"no row left in {read.source}: all {stats['dropped']} were longer than max_length "
            f"{cfg.max_length} (data.overlong: drop)",
            where="data.max_length",
            fix="raise data.max_length, or use data.overlong: truncate",
        )
    return RewardDataset(examples, stats, held)
